//! From a Pod's container to what the runtime runs: the command line (the container's
//! command/args over the image's Entrypoint/Cmd, as upstream resolves them), environment
//! (`$(VAR)` expansion), resource limits in cgroup terms, and quantities.

use std::collections::HashMap;

/// The process to run, as upstream resolves it: `command` replaces the image's Entrypoint
/// (and drops its Cmd), `args` replaces the image's Cmd.
pub fn command_line(
    command: Option<&[String]>,
    args: Option<&[String]>,
    entrypoint: &[String],
    cmd: &[String],
    env: &HashMap<String, String>,
) -> Vec<String> {
    let expand = |v: &[String]| v.iter().map(|s| expand(s, env)).collect::<Vec<_>>();
    match (
        command.filter(|c| !c.is_empty()),
        args.filter(|a| !a.is_empty()),
    ) {
        (Some(c), Some(a)) => [expand(c), expand(a)].concat(),
        (Some(c), None) => expand(c),
        (None, Some(a)) => [entrypoint.to_vec(), expand(a)].concat(),
        (None, None) => [entrypoint.to_vec(), cmd.to_vec()].concat(),
    }
}

/// Upstream's `$(VAR)` expansion: known variables are replaced, `$$` escapes, unknown
/// references stay as written.
pub fn expand(input: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A Kubernetes quantity in base units (`500m` → 0.5, `64Mi` → 67108864), if it parses.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in suffixes {
        if let Some(num) = q.strip_suffix(suffix) {
            return num.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok()
}

/// cgroup CPU settings from Kubernetes CPU request and limit: shares from the request
/// (1 CPU = 1024), CFS quota from the limit over a 100 ms period.
pub fn cpu(request: Option<&str>, limit: Option<&str>) -> (Option<u64>, Option<i64>, Option<u64>) {
    let shares = request
        .or(limit)
        .and_then(quantity)
        .map(|c| ((c * 1024.0) as u64).max(2));
    let quota = limit
        .and_then(quantity)
        .map(|c| ((c * 100_000.0) as i64).max(1000));
    (shares, quota, quota.map(|_| 100_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_resolution_follows_upstream() {
        let env = HashMap::from([("PORT".to_string(), "8080".to_string())]);
        let ep = s(&["/docker-entrypoint.sh"]);
        let cmd = s(&["nginx", "-g", "daemon off;"]);
        assert_eq!(
            command_line(None, None, &ep, &cmd, &env),
            s(&["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"])
        );
        assert_eq!(
            command_line(Some(&s(&["httpd"])), None, &ep, &cmd, &env),
            s(&["httpd"])
        );
        assert_eq!(
            command_line(None, Some(&s(&["-p", "$(PORT)"])), &ep, &cmd, &env),
            s(&["/docker-entrypoint.sh", "-p", "8080"])
        );
        assert_eq!(expand("a$$(PORT)b$(NOPE)", &env), "a$(PORT)b$(NOPE)");
    }

    #[test]
    fn quantities_and_cpu() {
        assert_eq!(quantity("64Mi"), Some(67108864.0));
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("1"), Some(1.0));
        assert_eq!(quantity("bogus"), None);
        assert_eq!(
            cpu(Some("250m"), Some("1")),
            (Some(256), Some(100_000), Some(100_000))
        );
        assert_eq!(cpu(None, None), (None, None, None));
    }
}
