//! The downward API's values, shared by env (`fieldRef`, `resourceFieldRef`) and downwardAPI
//! volumes: pod fields (labels and annotations files as `key="value"` lines, values quoted
//! like Go's `%q`, as upstream formats them) and container resources over a divisor, rounded
//! up as upstream (a missing limit is the node's allocatable amount).

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// Why a downward API value cannot be made (upstream's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource : {0}")]
    Resource(String),
    #[error("container {0} not found")]
    Container(String),
    #[error("failed to parse quantity {0:?}")]
    Quantity(String),
}

/// Pod facts the API object does not hold, known only to the node (env `fieldRef` only).
#[derive(Debug, Clone, Default)]
pub struct RuntimeFields {
    pub node_name: String,
    pub pod_ips: Vec<String>,
    pub host_ips: Vec<String>,
}

/// The node's allocatable amounts: the value of a limit a container does not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
}

impl Allocatable {
    /// What this node reports as allocatable (its capacity: nothing is reserved).
    pub fn of_host(data_dir: &std::path::Path) -> Allocatable {
        let host = crate::host::HostInfo::read(data_dir);
        let capacity = host.capacity(0);
        let get = |k: &str| capacity.get(k).cloned().unwrap_or_else(|| "0".into());
        Allocatable {
            cpu: get("cpu"),
            memory: get("memory"),
            ephemeral_storage: get("ephemeral-storage"),
        }
    }
}

/// A pod field as a string. `metadata.*` fields work everywhere (downwardAPI volumes);
/// `spec.*` and `status.*` ones need `runtime` (env only, as upstream's validation allows).
pub fn field_value(
    pod: &Pod,
    path: &str,
    runtime: Option<&RuntimeFields>,
) -> Result<String, DownwardError> {
    if let Some(rt) = runtime {
        let spec = pod.spec.as_ref();
        match path {
            "spec.nodeName" => {
                return Ok(spec
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| rt.node_name.clone()))
            }
            "spec.serviceAccountName" => {
                return Ok(spec
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default())
            }
            "spec.terminationGracePeriodSeconds" => {
                return Ok(spec
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
                    .to_string())
            }
            "status.podIP" => return Ok(rt.pod_ips.first().cloned().unwrap_or_default()),
            "status.podIPs" => return Ok(rt.pod_ips.join(",")),
            "status.hostIP" => return Ok(rt.host_ips.first().cloned().unwrap_or_default()),
            "status.hostIPs" => return Ok(rt.host_ips.join(",")),
            _ => {}
        }
    }
    if let Some((map, key)) = subscripted(path) {
        let values = match map {
            "metadata.labels" => pod.labels(),
            "metadata.annotations" => pod.annotations(),
            _ => return Err(DownwardError::FieldPath(path.to_string())),
        };
        return Ok(values.get(key).cloned().unwrap_or_default());
    }
    match path {
        "metadata.name" => Ok(pod.name_any()),
        "metadata.namespace" => Ok(pod.namespace().unwrap_or_else(|| "default".into())),
        "metadata.uid" => Ok(pod.uid().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(pod.labels())),
        "metadata.annotations" => Ok(format_map(pod.annotations())),
        _ => Err(DownwardError::FieldPath(path.to_string())),
    }
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (map, key) = inner.split_once("['")?;
    Some((map, key))
}

/// Upstream's labels/annotations file: `key="value"` lines sorted by key, values quoted as
/// Go's `%q`, no newline after the last line.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A string quoted as Go's `strconv.Quote` does (`%q`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`, close enough: graphic characters and the ASCII space; controls,
/// other spaces, format characters and private-use characters are escaped.
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let n = c as u32;
    let format_or_private = matches!(n,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !(c.is_control() || c.is_whitespace() || format_or_private)
}

/// A container resource over `divisor` (default 1), rounded up as upstream: `limits.cpu`,
/// `requests.cpu`, `limits.memory`, `requests.memory`, `limits.ephemeral-storage`,
/// `requests.ephemeral-storage`. A limit the container does not set is `allocatable`'s.
pub fn resource_value(
    resource: &str,
    divisor: Option<&Quantity>,
    container: &Container,
    allocatable: &Allocatable,
) -> Result<String, DownwardError> {
    let divisor = divisor
        .map(|d| d.0.as_str())
        .filter(|d| parse(d).is_some_and(|q| q.num != 0))
        .unwrap_or("1");
    let res = container.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    let (value, cpu) = match resource {
        "limits.cpu" => (
            get(&res.limits, "cpu").unwrap_or_else(|| allocatable.cpu.clone()),
            true,
        ),
        "requests.cpu" => (
            get(&res.requests, "cpu").unwrap_or_else(|| "0".into()),
            true,
        ),
        "limits.memory" => (
            get(&res.limits, "memory").unwrap_or_else(|| allocatable.memory.clone()),
            false,
        ),
        "requests.memory" => (
            get(&res.requests, "memory").unwrap_or_else(|| "0".into()),
            false,
        ),
        "limits.ephemeral-storage" => (
            get(&res.limits, "ephemeral-storage")
                .unwrap_or_else(|| allocatable.ephemeral_storage.clone()),
            false,
        ),
        "requests.ephemeral-storage" => (
            get(&res.requests, "ephemeral-storage").unwrap_or_else(|| "0".into()),
            false,
        ),
        other => return Err(DownwardError::Resource(other.to_string())),
    };
    // CPU in millicores, the rest in units, each rounded up before the division (as
    // upstream's MilliValue/Value), then the quotient rounded up.
    let scale = if cpu { 3 } else { 0 };
    let v = ceil_scaled(&value, scale).ok_or_else(|| DownwardError::Quantity(value.clone()))?;
    let d = ceil_scaled(divisor, scale)
        .filter(|d| *d > 0)
        .ok_or_else(|| DownwardError::Quantity(divisor.to_string()))?;
    Ok(div_ceil(v, d).to_string())
}

/// The container `name` of `pod` (init containers too), for `resourceFieldRef.containerName`.
pub fn container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, DownwardError> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| DownwardError::Container(name.to_string()))
}

/// A quantity as an exact fraction `num / den` (den > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    num: i128,
    den: i128,
}

/// Parses a Kubernetes quantity exactly (`1.5Gi`, `250m`, `1e3`, `-2`).
fn parse(q: &str) -> Option<Exact> {
    let q = q.trim();
    let (negative, body) = match q.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, q.strip_prefix('+').unwrap_or(q)),
    };
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = digits.parse().ok()?;
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        s => {
            let e = s.strip_prefix(['e', 'E'])?;
            exp10 += e.parse::<i32>().ok()?;
        }
    }
    mantissa = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    if negative {
        mantissa = -mantissa;
    }
    let (num, den) = if exp10 >= 0 {
        (mantissa.checked_mul(10i128.checked_pow(exp10 as u32)?)?, 1)
    } else {
        (mantissa, 10i128.checked_pow(exp10.unsigned_abs())?)
    };
    Some(Exact { num, den })
}

/// `q × 10^scale`, rounded up (upstream's `ScaledValue(-scale)`).
fn ceil_scaled(q: &str, scale: u32) -> Option<i128> {
    let e = parse(q)?;
    let num = e.num.checked_mul(10i128.checked_pow(scale)?)?;
    Some(div_ceil(num, e.den))
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) == (b < 0)) {
        q + 1
    } else {
        q
    }
}

/// A quantity in bytes (or units), rounded up; `None` when it does not parse.
pub fn bytes(q: &str) -> Option<u64> {
    ceil_scaled(q, 0).and_then(|v| u64::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u-1",
                "labels": {"zone": "a", "app": "web"},
                "annotations": {"note": "say \"hi\"\n\tthere\\ \u{7f} é \u{a0}", "b": ""}
            },
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [{"name": "c"}]}
        }))
        .expect("pod")
    }

    fn with_resources(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let m = |v: &[(&str, &str)]| {
            Some(
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect(),
            )
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: m(limits),
                requests: m(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node() -> Allocatable {
        Allocatable {
            cpu: "2".into(),
            memory: "4096Ki".into(),
            ephemeral_storage: "10Gi".into(),
        }
    }

    #[test]
    fn labels_and_annotations_files_as_upstream() {
        let p = pod();
        assert_eq!(
            field_value(&p, "metadata.labels", None).as_deref(),
            Ok("app=\"web\"\nzone=\"a\"")
        );
        assert_eq!(
            field_value(&p, "metadata.annotations", None).as_deref(),
            Ok("b=\"\"\nnote=\"say \\\"hi\\\"\\n\\tthere\\\\ \\x7f é \\u00a0\"")
        );
        assert_eq!(
            field_value(&p, "metadata.labels['zone']", None).as_deref(),
            Ok("a")
        );
        assert_eq!(
            field_value(&p, "metadata.annotations['missing']", None).as_deref(),
            Ok("")
        );
        assert_eq!(field_value(&p, "metadata.uid", None).as_deref(), Ok("u-1"));
        assert_eq!(
            field_value(&p, "status.podIP", None),
            Err(DownwardError::FieldPath("status.podIP".into()))
        );
        let rt = RuntimeFields {
            node_name: "n1".into(),
            pod_ips: vec!["10.0.0.5".into(), "fd00::5".into()],
            host_ips: vec!["192.168.1.2".into()],
        };
        assert_eq!(
            field_value(&p, "status.podIPs", Some(&rt)).as_deref(),
            Ok("10.0.0.5,fd00::5")
        );
        assert_eq!(
            field_value(&p, "status.hostIPs", Some(&rt)).as_deref(),
            Ok("192.168.1.2")
        );
        assert_eq!(
            field_value(&p, "spec.serviceAccountName", Some(&rt)).as_deref(),
            Ok("sa")
        );
        assert_eq!(
            go_quote("\u{1}\u{200b}\u{1F600}"),
            "\"\\x01\\u200b\u{1F600}\""
        );
    }

    #[test]
    fn resources_round_up_over_the_divisor() {
        let c = with_resources(
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "0.1"), ("memory", "1.5")],
        );
        let node = node();
        let v = |r: &str, d: Option<&str>| {
            resource_value(r, d.map(|d| Quantity(d.into())).as_ref(), &c, &node)
        };
        assert_eq!(v("limits.cpu", None).as_deref(), Ok("1"));
        assert_eq!(v("limits.cpu", Some("1m")).as_deref(), Ok("250"));
        assert_eq!(v("limits.cpu", Some("0")).as_deref(), Ok("1"));
        assert_eq!(v("requests.cpu", Some("1m")).as_deref(), Ok("100"));
        assert_eq!(v("requests.cpu", Some("1")).as_deref(), Ok("1"));
        assert_eq!(v("limits.memory", None).as_deref(), Ok("67108864"));
        assert_eq!(v("limits.memory", Some("1Mi")).as_deref(), Ok("64"));
        assert_eq!(v("limits.memory", Some("1M")).as_deref(), Ok("68"));
        assert_eq!(v("requests.memory", None).as_deref(), Ok("2"));
        assert_eq!(
            v("limits.ephemeral-storage", Some("1Gi")).as_deref(),
            Ok("10")
        );
        assert_eq!(v("requests.ephemeral-storage", None).as_deref(), Ok("0"));
        assert_eq!(
            v("limits.nvidia.com/gpu", None),
            Err(DownwardError::Resource("limits.nvidia.com/gpu".into()))
        );
        // No limits: the node's allocatable amounts.
        let bare = with_resources(&[], &[]);
        assert_eq!(
            resource_value("limits.cpu", None, &bare, &node).as_deref(),
            Ok("2")
        );
        assert_eq!(
            resource_value("limits.memory", Some(&Quantity("1Ki".into())), &bare, &node).as_deref(),
            Ok("4096")
        );
    }

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5k"), Some(1500));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("2E"), Some(2_000_000_000_000_000_000));
        assert_eq!(bytes("0.1"), Some(1));
        assert_eq!(ceil_scaled("0.5m", 3), Some(1));
        assert_eq!(ceil_scaled("-1.5", 0), Some(-1));
        assert_eq!(bytes("bogus"), None);
        assert_eq!(bytes(""), None);
        assert_eq!(bytes("12Qi"), None);
    }
}
