//! Real containers through crun and runc, each owned by a shim (this test binary re-executed
//! as `<exe> shim ...`). Needs root; skips a runtime that is not installed. Every test
//! removes the containers, mounts, cgroups and runtime state it made, also when it fails.

use std::fs;
use std::os::unix::fs::symlink;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_runtime::bundle::is_mount_point;
use berth_runtime::cgroup::{self, CgroupMode};
use berth_runtime::{
    ContainerError, ContainerManager, ContainerSpec, ContainerStatus, ExecSpec, LogConfig,
    ManagerConfig, Rootfs, RuntimeKind,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "dd", "tail", "head", "true", "printf", "ls", "id", "touch",
    "grep", "hostname", "pwd", "ps",
];

struct Fixture {
    dir: tempfile::TempDir,
    layer: PathBuf,
    manager: ContainerManager,
    config: ManagerConfig,
    kind: RuntimeKind,
    cgroup_parent: String,
    ids: Vec<String>,
}

impl Fixture {
    fn new(kind: RuntimeKind, name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-runtime-test")
            .tempdir()
            .expect("tempdir");
        let layer = dir.path().join("layer");
        fs::create_dir_all(layer.join("bin")).expect("mkdir bin");
        for d in ["proc", "dev", "sys", "tmp", "etc", "root"] {
            fs::create_dir_all(layer.join(d)).expect("mkdir");
        }
        fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("copy busybox");
        for a in APPLETS {
            symlink("busybox", layer.join("bin").join(a)).expect("symlink");
        }
        let config = ManagerConfig {
            state_dir: dir.path().join("state"),
            runtime: kind,
            runtime_binary: None,
            shim_exe: std::env::current_exe().expect("current_exe"),
        };
        Self {
            layer,
            manager: ContainerManager::new(config.clone()),
            config,
            kind,
            cgroup_parent: format!("/berth-test-{}-{}-{name}", std::process::id(), kind.name()),
            ids: Vec::new(),
            dir,
        }
    }

    fn spec(&mut self, id: &str, args: &[&str]) -> ContainerSpec {
        let id = format!("{id}-{}", self.kind.name());
        self.ids.push(id.clone());
        let mut spec = ContainerSpec::new(
            id.clone(),
            Rootfs::Overlay {
                lowerdirs: vec![self.layer.clone()],
            },
            args.iter().map(|a| a.to_string()).collect(),
            LogConfig {
                path: self.dir.path().join("logs").join(&id).join("0.log"),
                max_size: 1 << 20,
                max_files: 2,
            },
        );
        spec.cgroup_parent = self.cgroup_parent.clone();
        spec.hostname = Some("testbox".into());
        spec
    }

    fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.manager.status(id).expect("status");
            if !matches!(st, ContainerStatus::Running { .. }) || Instant::now() > deadline {
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts nothing of `id` is left: bundle, mount, runtime state, cgroup.
    fn assert_gone(&self, id: &str) {
        let bundle = self.manager.bundle_dir(id);
        assert!(
            !is_mount_point(&bundle.join("rootfs")),
            "rootfs still mounted"
        );
        assert!(!bundle.exists(), "bundle left behind");
        let rt_state = self.manager.runtime_root(self.kind).join(id);
        assert!(
            !rt_state.exists(),
            "runtime state left behind: {rt_state:?}"
        );
        let cg = format!("{}/{id}", self.cgroup_parent);
        for d in cgroup::cgroup_dirs(&cg, CgroupMode::detect()) {
            assert!(!d.exists(), "cgroup left behind: {d:?}");
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in &self.ids {
            if self.manager.bundle_dir(id).exists() {
                let _ = self
                    .manager
                    .stop(id, libc::SIGKILL, Duration::from_millis(0));
                if let Err(e) = self.manager.remove(id) {
                    eprintln!("cleanup of {id}: {e}");
                }
            }
        }
        if let Err(e) = cgroup::remove_cgroup(&self.cgroup_parent, CgroupMode::detect()) {
            eprintln!("cleanup of cgroup {}: {e}", self.cgroup_parent);
        }
    }
}

fn cri_lines(log: &str, stream: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next()?;
            let s = parts.next()?;
            let tag = parts.next()?;
            let content = parts.next().unwrap_or("");
            assert_eq!(ts.len(), 30, "timestamp {ts:?}");
            assert!(
                ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
                "timestamp {ts:?}"
            );
            assert!(tag == "F" || tag == "P", "tag {tag:?}");
            (s == stream).then(|| format!("{tag} {content}"))
        })
        .collect()
}

fn exit_code_and_logs(kind: RuntimeKind, plain_dir: bool) {
    let mut f = Fixture::new(kind, "exit");
    let mut spec = f.spec(
        "exit3",
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; hostname >/dev/null; printf tail; exit 3",
        ],
    );
    if plain_dir {
        spec.rootfs = Rootfs::Dir(f.layer.clone());
    }
    let id = spec.id.clone();
    let running = f.manager.start(&spec).expect("start");
    assert!(running.pid > 0);
    match f.wait_exited(&id, Duration::from_secs(10)) {
        ContainerStatus::Exited {
            code,
            signal,
            oom_killed,
            ..
        } => {
            assert_eq!((code, signal, oom_killed), (3, None, false));
        }
        other => panic!("not exited: {other:?}"),
    }
    let log = fs::read_to_string(&spec.log.path).expect("read log");
    assert_eq!(
        cri_lines(&log, "stdout"),
        vec!["F out1", "F out2", "F tail"],
        "{log}"
    );
    assert_eq!(cri_lines(&log, "stderr"), vec!["F err1"], "{log}");
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
    assert!(spec.log.path.exists(), "the log outlives the container");
}

fn stop_with_grace(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "stop");
    // busybox sleep as pid 1 has no SIGTERM handler, so SIGTERM is ignored: SIGKILL after grace.
    let spec = f.spec("sleeper", &["sleep", "1000"]);
    let id = spec.id.clone();
    f.manager.start(&spec).expect("start");
    assert!(matches!(
        f.manager.status(&id).expect("status"),
        ContainerStatus::Running { .. }
    ));
    let t = Instant::now();
    let st = f
        .manager
        .stop(&id, libc::SIGTERM, Duration::from_millis(700))
        .expect("stop");
    assert!(t.elapsed() >= Duration::from_millis(700));
    match st {
        ContainerStatus::Exited { code, signal, .. } => {
            assert_eq!((code, signal), (137, Some(libc::SIGKILL)))
        }
        other => panic!("not exited: {other:?}"),
    }
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);

    // A process that handles SIGTERM exits within the grace period.
    let spec = f.spec(
        "trapper",
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 0.05; done",
        ],
    );
    let id = spec.id.clone();
    f.manager.start(&spec).expect("start");
    let t = Instant::now();
    let st = f
        .manager
        .stop(&id, libc::SIGTERM, Duration::from_secs(10))
        .expect("stop");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            st,
            ContainerStatus::Exited {
                code: 0,
                signal: None,
                ..
            }
        ),
        "{st:?}"
    );
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
}

fn oom_killed(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "oom");
    let mut spec = f.spec(
        "oom",
        &["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"],
    );
    spec.resources.memory_limit = Some(16 << 20);
    let id = spec.id.clone();
    f.manager.start(&spec).expect("start");
    match f.wait_exited(&id, Duration::from_secs(20)) {
        ContainerStatus::Exited {
            oom_killed, signal, ..
        } => {
            assert!(oom_killed, "not reported as OOM killed");
            assert_eq!(signal, Some(libc::SIGKILL));
        }
        other => panic!("not exited: {other:?}"),
    }
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
}

fn adoption(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "adopt");
    let spec = f.spec("adopted", &["sh", "-c", "echo hello; exec sleep 1000"]);
    let id = spec.id.clone();
    let pid = f.manager.start(&spec).expect("start").pid;
    // Forget everything in memory: a new manager (a restarted node agent) reads the disk.
    f.manager = ContainerManager::new(f.config.clone());
    assert_eq!(f.manager.list(), vec![id.clone()]);
    match f.manager.status(&id).expect("status") {
        ContainerStatus::Running { pid: p, .. } => assert_eq!(p, pid),
        other => panic!("not running: {other:?}"),
    }
    // The container's parent is the shim, which is not our child.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ppid: i32 = stat[stat.rfind(')').expect(")") + 1..]
        .split_whitespace()
        .nth(1)
        .expect("ppid")
        .parse()
        .expect("ppid number");
    assert_ne!(ppid, std::process::id() as i32);
    let shim_cmdline = fs::read(format!("/proc/{ppid}/cmdline")).expect("shim cmdline");
    assert!(String::from_utf8_lossy(&shim_cmdline).contains("shim"));
    let status = fs::read_to_string(format!("/proc/{ppid}/status")).unwrap_or_default();
    if let Some(rss) = status.lines().find(|l| l.starts_with("VmRSS")) {
        println!(
            "    shim {}",
            rss.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    assert!(matches!(
        f.manager.remove(&id),
        Err(ContainerError::StillRunning(_))
    ));
    let st = f
        .manager
        .stop(&id, libc::SIGKILL, Duration::from_secs(5))
        .expect("stop");
    assert!(
        matches!(st, ContainerStatus::Exited { code: 137, .. }),
        "{st:?}"
    );
    let log = fs::read_to_string(&spec.log.path).expect("log");
    assert_eq!(cri_lines(&log, "stdout"), vec!["F hello"]);
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
    // The shim is gone too.
    assert!(
        !Path::new(&format!("/proc/{ppid}")).exists() || {
            let s = fs::read(format!("/proc/{ppid}/cmdline")).unwrap_or_default();
            !String::from_utf8_lossy(&s).contains(&id)
        }
    );
}

fn bad_command(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "bad");
    let spec = f.spec("nope", &["/nope"]);
    let id = spec.id.clone();
    match f.manager.start(&spec) {
        Err(ContainerError::Create { message, .. }) => {
            assert!(message.contains("/nope"), "message: {message}");
            println!("    runtime said: {message}");
        }
        other => panic!("expected a create error, got {other:?}"),
    }
    f.assert_gone(&id);
}

fn spec_is_applied(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "spec");
    let data = f.dir.path().join("data");
    fs::create_dir_all(&data).expect("mkdir data");
    fs::write(data.join("f"), "from-host\n").expect("write");
    let mut spec = f.spec(
        "spec",
        &[
            "sh",
            "-c",
            "id -u; id -G; pwd; echo $FOO; hostname; cat /data/f; \
             touch /data/x 2>/dev/null || echo ro-bind; \
             touch /t/x && echo tmpfs-ok; \
             touch /x 2>/dev/null || echo ro-root; \
             grep CapBnd /proc/self/status; echo done; exec sleep 1000",
        ],
    );
    spec.uid = 1000;
    spec.gid = 1000;
    spec.supplemental_groups = vec![2000];
    spec.working_dir = Some("/tmp".into());
    spec.env.push(("FOO".into(), "bar".into()));
    spec.mounts = vec![
        berth_runtime::MountSpec::Bind {
            source: data.clone(),
            destination: "/data".into(),
            read_only: true,
        },
        berth_runtime::MountSpec::Tmpfs {
            destination: "/t".into(),
            size_bytes: Some(1 << 20),
        },
    ];
    spec.security.read_only_root_filesystem = true;
    spec.security.no_new_privileges = true;
    spec.security.capabilities.drop = vec!["ALL".into()];
    spec.security.capabilities.add = vec!["NET_ADMIN".into()];
    spec.resources.pids_limit = Some(64);
    spec.resources.memory_limit = Some(64 << 20);
    spec.resources.cpu_quota = Some(50_000);
    spec.resources.cpu_period = Some(100_000);
    spec.resources.cpu_shares = Some(512);
    let id = spec.id.clone();
    f.manager.start(&spec).expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = fs::read_to_string(&spec.log.path).unwrap_or_default();
        if log.contains("F done") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        cri_lines(&log, "stdout"),
        vec![
            "F 1000",
            "F 1000 2000",
            "F /tmp",
            "F bar",
            "F testbox",
            "F from-host",
            "F ro-bind",
            "F tmpfs-ok",
            "F ro-root",
            "F CapBnd:\t0000000000001000",
            "F done",
        ],
        "{log}"
    );
    // The limits reached the container's cgroup.
    let mode = CgroupMode::detect();
    let cg = format!("{}/{id}", f.cgroup_parent);
    let read = |ctrl_v1: &str, file: &str| {
        let dir = if mode.memory_is_v1() {
            Path::new(cgroup::CGROUP_ROOT)
                .join(ctrl_v1)
                .join(cg.trim_start_matches('/'))
        } else {
            Path::new(cgroup::CGROUP_ROOT).join(cg.trim_start_matches('/'))
        };
        fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("{file}: {e}"))
    };
    assert_eq!(read("pids", "pids.max"), "64");
    if mode.memory_is_v1() {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.shares"), "512");
    } else {
        assert_eq!(read("memory", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
    }
    f.manager
        .stop(&id, libc::SIGKILL, Duration::from_secs(5))
        .expect("stop");
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
}

fn shim_killed(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "shimkill");
    let spec = f.spec("orphan", &["sleep", "1000"]);
    let id = spec.id.clone();
    let pid = f.manager.start(&spec).expect("start").pid;
    let state: serde_json::Value = serde_json::from_slice(
        &fs::read(f.manager.bundle_dir(&id).join("state.json")).expect("state.json"),
    )
    .expect("state json");
    let shim_pid = state["shim_pid"].as_i64().expect("shim_pid") as i32;
    assert!(shim_pid > 0 && shim_pid != pid);
    // The shim is ours (this test started it); kill it from outside.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    let deadline = Instant::now() + Duration::from_secs(5);
    while berth_runtime::shim::process_alive(
        shim_pid,
        state["shim_start_ticks"].as_u64().expect("ticks"),
    ) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The container outlives its shim.
    assert!(matches!(
        f.manager.status(&id).expect("status"),
        ContainerStatus::Running { .. }
    ));
    let t = Instant::now();
    let st = f
        .manager
        .stop(&id, libc::SIGKILL, Duration::from_secs(5))
        .expect("stop");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop waited for an exit file"
    );
    assert!(matches!(st, ContainerStatus::Unknown { .. }), "{st:?}");
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
}

fn exec_in_container(kind: RuntimeKind) {
    let mut f = Fixture::new(kind, "exec");
    let mut spec = f.spec("execd", &["sleep", "1000"]);
    spec.env.push(("FOO".into(), "bar".into()));
    spec.env.push(("PATH".into(), "/bin".into()));
    spec.working_dir = Some("/tmp".into());
    let id = spec.id.clone();
    f.manager.start(&spec).expect("start");
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let sec = Duration::from_secs(5);

    // The container's environment and working directory; exit code and both streams.
    let out = f
        .manager
        .exec_output(
            &id,
            &s(&["sh", "-c", "echo $FOO; pwd; echo err >&2; exit 3"]),
            sec,
        )
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bar\n/tmp\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = f
        .manager
        .exec_output(&id, &s(&["sh", "-c", "kill -9 $$"]), sec)
        .expect("exec");
    assert_eq!(out.exit_code, 137);

    // The runtime's own failure is an error with its message, not process output.
    match f.manager.exec_output(&id, &s(&["/nope"]), sec) {
        Err(ContainerError::Exec { message, .. }) => {
            assert!(message.contains("nope"), "{message}");
            println!("    runtime said: {message}");
        }
        other => panic!("expected an exec error, got {other:?}"),
    }

    // Extra environment, working directory and user; the caller owns the stdio.
    let mut exec = f
        .manager
        .exec_command(
            &id,
            &ExecSpec {
                args: s(&["sh", "-c", "echo $FOO $EXTRA; pwd; id -u; id -g"]),
                env: vec![("EXTRA".into(), "x".into()), ("FOO".into(), "baz".into())],
                cwd: Some("/".into()),
                user: Some((1000, 1001)),
                tty: false,
            },
        )
        .expect("exec command");
    let out = exec.command.output().expect("run exec");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "baz x\n/\n1000\n1001\n"
    );
    drop(exec);

    // A timeout kills the process and what it forked, inside the container.
    let t = Instant::now();
    match f.manager.exec_output(
        &id,
        &s(&["sh", "-c", "sleep 201 & sleep 202; echo never"]),
        Duration::from_millis(500),
    ) {
        Err(ContainerError::ExecTimedOut { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = f
            .manager
            .exec_output(&id, &s(&["ps", "-o", "args"]), sec)
            .expect("ps");
        let ps = String::from_utf8_lossy(&ps.stdout).to_string();
        if !ps.contains("sleep 20") {
            break;
        }
        assert!(Instant::now() < deadline, "exec'd processes survived: {ps}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A background process holding the output does not hold the caller past the timeout.
    let t = Instant::now();
    let out = f
        .manager
        .exec_output(
            &id,
            &s(&["sh", "-c", "sleep 203 & echo started"]),
            Duration::from_millis(700),
        )
        .expect("exec");
    assert_eq!((out.exit_code, out.stdout), (0, b"started\n".to_vec()));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // A terminal.
    tty_exec(&f, &id);
    let leftovers: Vec<_> = fs::read_dir(f.manager.bundle_dir(&id))
        .expect("bundle")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("exec-"))
        .collect();
    assert!(leftovers.is_empty(), "exec files left: {leftovers:?}");

    f.manager
        .stop(&id, libc::SIGKILL, Duration::from_secs(5))
        .expect("stop");
    assert!(matches!(
        f.manager.exec_output(&id, &s(&["true"]), sec),
        Err(ContainerError::NotRunning(_))
    ));
    f.manager.remove(&id).expect("remove");
    f.assert_gone(&id);
}

/// A terminal exec: the pty's master arrives over the console socket (crun), or is the
/// one of the pty runc runs on (runc); the command brings its own stdio.
fn tty_exec(f: &Fixture, id: &str) {
    let mut exec = f
        .manager
        .exec_command(
            id,
            &ExecSpec {
                args: ["sh", "-c", "tty; read x; echo got $x"]
                    .map(String::from)
                    .to_vec(),
                tty: true,
                ..Default::default()
            },
        )
        .expect("tty exec command");
    // Spawned from a command of its own, dropped at once: under runc its stdio is the
    // terminal's other side, which must close with the process.
    let mut child = std::mem::replace(&mut exec.command, std::process::Command::new("true"))
        .spawn()
        .expect("spawn tty exec");
    let master = exec
        .receive_terminal(Duration::from_secs(10), || false)
        .expect("terminal");
    berth_runtime::console::set_window_size(std::os::fd::AsFd::as_fd(&master), 100, 30)
        .expect("resize");
    let mut term = std::fs::File::from(master);
    std::io::Write::write_all(&mut term, b"hello\n").expect("type");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // The master reads EIO once the process (the terminal's last user) is gone.
    while let Ok(n) = std::io::Read::read(&mut term, &mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let status = child.wait().expect("wait");
    let seen = String::from_utf8_lossy(&seen);
    assert!(status.success(), "{seen}");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert!(seen.contains("got hello"), "{seen}");
    drop(exec);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") {
        std::process::exit(berth_runtime::shim::shim_main(args[2..].to_vec()));
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipping the container tests: they need root");
        return;
    }
    type Test = (&'static str, fn(RuntimeKind), RuntimeKind);
    let tests: Vec<Test> = vec![
        (
            "crun_exit_code_and_logs",
            |k| exit_code_and_logs(k, false),
            RuntimeKind::Crun,
        ),
        ("crun_stop_with_grace", stop_with_grace, RuntimeKind::Crun),
        ("crun_oom_killed", oom_killed, RuntimeKind::Crun),
        ("crun_adoption", adoption, RuntimeKind::Crun),
        ("crun_bad_command", bad_command, RuntimeKind::Crun),
        ("crun_spec_is_applied", spec_is_applied, RuntimeKind::Crun),
        ("crun_shim_killed", shim_killed, RuntimeKind::Crun),
        (
            "crun_exec_in_container",
            exec_in_container,
            RuntimeKind::Crun,
        ),
        (
            "runc_exit_code_and_logs_plain_dir",
            |k| exit_code_and_logs(k, true),
            RuntimeKind::Runc,
        ),
        ("runc_stop_with_grace", stop_with_grace, RuntimeKind::Runc),
        ("runc_oom_killed", oom_killed, RuntimeKind::Runc),
        ("runc_adoption", adoption, RuntimeKind::Runc),
        ("runc_bad_command", bad_command, RuntimeKind::Runc),
        ("runc_spec_is_applied", spec_is_applied, RuntimeKind::Runc),
        ("runc_shim_killed", shim_killed, RuntimeKind::Runc),
        (
            "runc_exec_in_container",
            exec_in_container,
            RuntimeKind::Runc,
        ),
    ];
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test, kind) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if kind.find_binary().is_none() {
            println!("test {name} ... skipped ({} is not installed)", kind.name());
            continue;
        }
        ran += 1;
        let t = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(|| test(kind))).is_ok();
        println!(
            "test {name} ... {} ({:.2}s)",
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if !ok {
            failed.push(name);
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failed: {failed:?}");
        std::process::exit(1);
    }
}
