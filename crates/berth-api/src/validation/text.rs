//! Upstream's validation message texts (`k8s.io/apimachinery/pkg/util/validation`) and the
//! Go-style printing of values inside field errors.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// Compiles one of this module's constant patterns; a failure (never expected) makes the
/// check reject everything rather than panic.
fn re(pattern: &str) -> Option<Regex> {
    Regex::new(pattern).ok()
}

trait Matches {
    fn is_match(&self, s: &str) -> bool;
}

impl Matches for LazyLock<Option<Regex>> {
    fn is_match(&self, s: &str) -> bool {
        self.as_ref().is_some_and(|r| r.is_match(s))
    }
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const PERCENT_FMT: &str = "[0-9]+%";

static DNS1123_LABEL: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(&format!("^{DNS1123_LABEL_FMT}$")));
static DNS1123_SUBDOMAIN: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(&format!("^{DNS1123_SUBDOMAIN_FMT}$")));
static DNS1035_LABEL: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(&format!("^{DNS1035_LABEL_FMT}$")));
static QUALIFIED_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| re(&format!("^{QUALIFIED_NAME_FMT}$")));
static LABEL_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| re(&format!("^{LABEL_VALUE_FMT}$")));
static CONFIG_KEY: LazyLock<Option<Regex>> = LazyLock::new(|| re(&format!("^{CONFIG_KEY_FMT}$")));
static PERCENT: LazyLock<Option<Regex>> = LazyLock::new(|| re(&format!("^{PERCENT_FMT}$")));
static PORT_NAME_CHARSET: LazyLock<Option<Regex>> = LazyLock::new(|| re("^[-a-z0-9]+$"));
static PORT_NAME_ONE_LETTER: LazyLock<Option<Regex>> = LazyLock::new(|| re("[a-z]"));

/// Upstream's `RegexError`: the message, examples and the regex.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// `must be no more than N characters`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `must be between LO and HI, inclusive`.
pub fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

/// Upstream's `IsDNS1123Label`.
pub fn dns1123_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !DNS1123_LABEL.is_match(v) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// Upstream's `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !DNS1123_SUBDOMAIN.is_match(v) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream's `IsDNS1035Label`.
pub fn dns1035_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !DNS1035_LABEL.is_match(v) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Upstream's `IsValidPathSegmentName` (RBAC object names).
pub fn path_segment_name(v: &str) -> Vec<String> {
    if v == "." || v == ".." {
        return vec![format!("may not be '{v}'")];
    }
    let mut errs = Vec::new();
    for bad in ["/", "%"] {
        if v.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// Upstream's `IsQualifiedName` (label and annotation keys, finalizers).
pub fn qualified_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !QUALIFIED_NAME.is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream's `IsValidLabelValue`.
pub fn label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !LABEL_VALUE.is_match(v) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Upstream's `IsConfigMapKey` (ConfigMap and Secret keys).
pub fn config_map_key(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !CONFIG_KEY.is_match(v) {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if v == "." {
        errs.push("must not be '.'".into());
    } else if v == ".." {
        errs.push("must not be '..'".into());
    } else if v.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

/// Upstream's `IsValidPortNum`.
pub fn port_num(p: i64) -> Vec<String> {
    if (1..=65535).contains(&p) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

/// Upstream's `IsValidPortName` (IANA service names).
pub fn port_name(p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if p.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !PORT_NAME_CHARSET.is_match(p) {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !PORT_NAME_ONE_LETTER.is_match(p) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if p.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if p.starts_with('-') || p.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// Upstream's `IsValidPercent`.
pub fn percent(p: &str) -> Vec<String> {
    if PERCENT.is_match(p) {
        Vec::new()
    } else {
        vec![regex_error(
            "a valid percent string must be a numeric string followed by an ending '%'",
            PERCENT_FMT,
            &["1%", "93%"],
        )]
    }
}

/// Upstream's relaxed `IsEnvVarName` (default since 1.32).
pub fn env_var_name(v: &str) -> Vec<String> {
    if v.chars().all(|c| (' '..='~').contains(&c) && c != '=') {
        Vec::new()
    } else {
        vec![
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Go value printing (`%q`, `%#v`)

/// Go's `%q` of a string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a JSON value prints inside an `Invalid value: ...` message.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => {
            if a.iter().all(Value::is_string) {
                go_string_slice(a)
            } else {
                format!(
                    "[]interface {{}}{{{}}}",
                    a.iter().map(go_value).collect::<Vec<_>>().join(", ")
                )
            }
        }
        Value::Object(m) => go_map_ss(Some(m)),
    }
}

/// `[]string{"a", "b"}`.
pub fn go_string_slice(a: &[Value]) -> String {
    let items: Vec<String> = a
        .iter()
        .map(|v| go_quote(v.as_str().unwrap_or_default()))
        .collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// `map[string]string{"a":"b", "c":"d"}` (keys sorted, as Go prints maps), or
/// `map[string]string(nil)`.
pub fn go_map_ss(m: Option<&Map<String, Value>>) -> String {
    let Some(m) = m else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, &Value)> = m.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => go_quote(s),
                other => go_quote(&other.to_string()),
            };
            format!("{}:{}", go_quote(k), v)
        })
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

/// `v1.LabelSelector{MatchLabels:..., MatchExpressions:...}` as Go's `%#v` prints it.
pub fn go_label_selector(sel: &Value) -> String {
    if sel.is_null() {
        return "null".into();
    }
    let labels = go_map_ss(sel.get("matchLabels").and_then(Value::as_object));
    let exprs = match sel.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        Some(vs) => go_string_slice(vs),
                        None => "[]string(nil)".into(),
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        go_quote(e.get("key").and_then(Value::as_str).unwrap_or_default()),
                        go_quote(
                            e.get("operator")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                        ),
                        values
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{labels}, MatchExpressions:{exprs}}}")
}

/// `intstr.IntOrString{Type:0, IntVal:1, StrVal:""}` as Go's `%#v` prints it.
pub fn go_int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            go_quote(s)
        ),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or(0)
        ),
    }
}
