//! The official Python `kubernetes` client against a real `berth server`.

mod common;

use common::Cluster;
use std::path::Path;

#[test]
fn python_client_session() {
    let c = Cluster::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_session.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", c.kubeconfig())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python client session failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client session ok"));
}
