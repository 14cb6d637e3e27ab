//! Matching as upstream defines it: label selectors (pods, namespaces), node selector terms
//! (node affinity with `matchExpressions` and `matchFields`), and taints against tolerations.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// The operator of a label selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// A parsed label selector. `None` requirements is upstream's `labels.Nothing()` (a nil
/// selector matches nothing); an empty list matches everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    requirements: Option<Vec<Requirement>>,
}

impl Selector {
    /// The selector matching nothing (a nil `LabelSelector`).
    pub fn nothing() -> Self {
        Selector { requirements: None }
    }

    /// The selector matching everything (`{}`).
    pub fn everything() -> Self {
        Selector {
            requirements: Some(Vec::new()),
        }
    }

    /// Parses a `LabelSelector`; `None` (nil) matches nothing. An operator upstream does not
    /// know makes the selector match nothing (upstream rejects it at validation).
    pub fn from_label_selector(selector: Option<&LabelSelector>) -> Self {
        let Some(selector) = selector else {
            return Self::nothing();
        };
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: k.clone(),
                operator: Operator::In,
                values: vec![v.clone()],
            });
        }
        for e in selector.match_expressions.iter().flatten() {
            let operator = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => return Self::nothing(),
            };
            requirements.push(Requirement {
                key: e.key.clone(),
                operator,
                values: e.values.clone().unwrap_or_default(),
            });
        }
        Selector {
            requirements: Some(requirements),
        }
    }

    /// Adds a requirement (upstream's `matchLabelKeys`/`mismatchLabelKeys` merging).
    pub fn add(&mut self, requirement: Requirement) {
        if let Some(r) = self.requirements.as_mut() {
            r.push(requirement);
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let Some(requirements) = &self.requirements else {
            return false;
        };
        requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Whether this selector matches nothing at all (nil).
    pub fn is_nothing(&self) -> bool {
        self.requirements.is_none()
    }
}

/// Whether a node with `labels` and `name` matches any of `terms` (terms are ORed; a term's
/// requirements are ANDed; a term without requirements matches nothing), as upstream's
/// `nodeaffinity.NodeSelector`.
pub fn node_matches_terms(terms: &[NodeSelectorTerm], labels: &Labels, name: &str) -> bool {
    terms.iter().any(|t| node_matches_term(t, labels, name))
}

/// Whether a node matches one node selector term.
pub fn node_matches_term(term: &NodeSelectorTerm, labels: &Labels, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // Only metadata.name is a supported field, as upstream.
            r.key == "metadata.name" && requirement_matches(r, Some(name))
        })
}

/// Whether a node selector requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`,
/// `Lt`) holds for a label's value (`None`: the label is missing).
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint`, as upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = Selector::from_label_selector(Some(&sel));
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "db")])));
        assert!(!Selector::from_label_selector(None).matches(&labels(&[])));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default()))
                .matches(&labels(&[("x", "y")]))
        );
    }

    #[test]
    fn node_selector_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        assert!(requirement_matches(
            &req("zone", "In", &["a", "b"]),
            l.get("zone").map(String::as_str)
        ));
        assert!(!requirement_matches(
            &req("zone", "NotIn", &["a"]),
            Some("a")
        ));
        assert!(requirement_matches(&req("zone", "NotIn", &["a"]), None));
        assert!(requirement_matches(&req("zone", "Exists", &[]), Some("a")));
        assert!(requirement_matches(&req("gpu", "DoesNotExist", &[]), None));
        assert!(requirement_matches(&req("cores", "Gt", &["4"]), Some("8")));
        assert!(!requirement_matches(&req("cores", "Lt", &["4"]), Some("8")));
        assert!(!requirement_matches(&req("cores", "Gt", &["x"]), Some("8")));
        let term = NodeSelectorTerm {
            match_expressions: Some(vec![req("zone", "In", &["a"])]),
            match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
        };
        assert!(node_matches_term(&term, &l, "n1"));
        assert!(!node_matches_term(&term, &l, "n2"));
        assert!(!node_matches_term(&NodeSelectorTerm::default(), &l, "n1"));
    }

    #[test]
    fn tolerations() {
        let taint = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        };
        let equal = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("gpu".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        };
        assert!(tolerates(&equal, &taint));
        let wrong_value = Toleration {
            value: Some("cpu".into()),
            ..equal.clone()
        };
        assert!(!tolerates(&wrong_value, &taint));
        let exists_all = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&exists_all, &taint));
        let other_effect = Toleration {
            effect: Some("NoExecute".into()),
            ..equal
        };
        assert!(!tolerates(&other_effect, &taint));
    }
}
