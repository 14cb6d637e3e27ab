//! A container's environment as upstream's kubelet makes it: the image's variables, then
//! `envFrom` (configMapRef/secretRef with `prefix` and `optional`; invalid names skipped with
//! an `InvalidEnvironmentVariableNames` event), then `env` (values with `$(VAR)` expansion,
//! configMap and secret keys, pod fields and container resources through the downward API).
//! A missing ConfigMap, Secret or key fails with upstream's message, which the pod shows as
//! `CreateContainerConfigError`.

use crate::downward::{self, DownwardError, RuntimeFields};
use crate::pods::PodRuntime;
use crate::sources::Source;
use crate::spec;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::ResourceExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Why a container's environment cannot be made (upstream's messages).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {ns}/{name}")]
    ConfigMapKey {
        key: String,
        ns: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {ns}/{name}")]
    SecretKey {
        key: String,
        ns: String,
        name: String,
    },
    #[error("failed to read {kind} {ns}/{name}: {source}")]
    Read {
        kind: &'static str,
        ns: String,
        name: String,
        source: kube::Error,
    },
    #[error(transparent)]
    Downward(#[from] DownwardError),
}

/// Upstream's (relaxed) environment variable name: printable ASCII other than `=`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| (' '..='~').contains(&c) && c != '=')
}

/// Variables in the order they were first declared; a later declaration replaces the value.
#[derive(Default)]
struct Declared {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Declared {
    fn set(&mut self, name: String, value: String) {
        if !self.values.contains_key(&name) {
            self.order.push(name.clone());
        }
        self.values.insert(name, value);
    }
}

/// Adds `envFrom` entries under `prefix`; returns the names skipped as invalid.
fn add_env_from(
    prefix: &str,
    entries: BTreeMap<String, String>,
    declared: &mut Declared,
) -> Vec<String> {
    let mut invalid = Vec::new();
    for (k, v) in entries {
        let k = format!("{prefix}{k}");
        if valid_name(&k) {
            declared.set(k, v);
        } else {
            invalid.push(k);
        }
    }
    invalid
}

impl PodRuntime {
    /// A ConfigMap or Secret read once per environment (`None`: it does not exist).
    async fn env_source<'a, K: Source>(
        &self,
        cache: &'a mut HashMap<String, Option<Arc<K>>>,
        ns: &str,
        name: &str,
    ) -> Result<&'a Option<Arc<K>>, EnvError> {
        if !cache.contains_key(name) {
            let got = self
                .sources
                .get::<K>(&self.client, ns, name, true)
                .await
                .map_err(|source| EnvError::Read {
                    kind: K::KIND,
                    ns: ns.to_string(),
                    name: name.to_string(),
                    source,
                })?;
            cache.insert(name.to_string(), got);
        }
        Ok(cache.get(name).unwrap_or(&None))
    }

    /// Records upstream's event for `envFrom` keys that were skipped.
    async fn invalid_names_event(
        &self,
        pod: &Pod,
        c: &Container,
        source: (&str, &str),
        mut invalid: Vec<String>,
    ) {
        if invalid.is_empty() {
            return;
        }
        invalid.sort();
        let (kind, name) = source;
        let message = format!(
            "Keys [{}] from the EnvFrom {kind} {}/{name} were skipped since they are considered invalid environment variable names.",
            invalid.join(", "),
            pod.namespace().unwrap_or_else(|| "default".into()),
        );
        self.record(
            pod,
            &c.name,
            "Warning",
            "InvalidEnvironmentVariableNames",
            &message,
        )
        .await;
    }

    /// The environment of a container: the image's variables, overridden by the container's
    /// `envFrom` and then `env`.
    pub(crate) async fn env(
        &self,
        pod: &Pod,
        c: &Container,
        image_env: &[String],
        pod_ip: &str,
    ) -> Result<Vec<(String, String)>, EnvError> {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let mut config_maps: HashMap<String, Option<Arc<ConfigMap>>> = HashMap::new();
        let mut secrets: HashMap<String, Option<Arc<Secret>>> = HashMap::new();
        let mut declared = Declared::default();
        // envFrom first; env entries replace what it set.
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.config_map_ref {
                let entries = match self.env_source(&mut config_maps, &ns, &r.name).await? {
                    Some(cm) => cm.data.clone().unwrap_or_default(),
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                };
                let invalid = add_env_from(&prefix, entries, &mut declared);
                self.invalid_names_event(pod, c, ("configMap", &r.name), invalid)
                    .await;
            } else if let Some(r) = &from.secret_ref {
                let entries = match self.env_source(&mut secrets, &ns, &r.name).await? {
                    Some(s) => s
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                        .collect(),
                    None if r.optional == Some(true) => continue,
                    None => return Err(EnvError::SecretNotFound(r.name.clone())),
                };
                let invalid = add_env_from(&prefix, entries, &mut declared);
                self.invalid_names_event(pod, c, ("secret", &r.name), invalid)
                    .await;
            }
        }
        let runtime = RuntimeFields {
            node_name: self.node_name.clone(),
            pod_ips: vec![pod_ip.to_string()],
            host_ips: self.node_ip.iter().cloned().collect(),
        };
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) if !v.is_empty() => spec::expand(v, &declared.values),
                (_, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        downward::field_value(pod, &f.field_path, Some(&runtime))?
                    } else if let Some(r) = &from.resource_field_ref {
                        let container = match r.container_name.as_deref() {
                            Some(name) if !name.is_empty() => downward::container(pod, name)?,
                            _ => c,
                        };
                        downward::resource_value(
                            &r.resource,
                            r.divisor.as_ref(),
                            container,
                            self.sources
                                .allocatable(self.pods_dir.parent().unwrap_or(&self.pods_dir)),
                        )?
                    } else if let Some(r) = &from.config_map_key_ref {
                        let optional = r.optional == Some(true);
                        let cm = match self.env_source(&mut config_maps, &ns, &r.name).await? {
                            Some(cm) => cm,
                            None if optional => continue,
                            None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
                        };
                        match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::ConfigMapKey {
                                    key: r.key.clone(),
                                    ns: ns.clone(),
                                    name: r.name.clone(),
                                })
                            }
                        }
                    } else if let Some(r) = &from.secret_key_ref {
                        let optional = r.optional == Some(true);
                        let s = match self.env_source(&mut secrets, &ns, &r.name).await? {
                            Some(s) => s,
                            None if optional => continue,
                            None => return Err(EnvError::SecretNotFound(r.name.clone())),
                        };
                        match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::SecretKey {
                                    key: r.key.clone(),
                                    ns: ns.clone(),
                                    name: r.name.clone(),
                                })
                            }
                        }
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            declared.set(e.name.clone(), value);
        }
        let mut env: Vec<(String, String)> = image_env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .filter(|(k, _)| !declared.values.contains_key(k))
            .collect();
        for name in declared.order {
            if let Some(v) = declared.values.remove(&name) {
                env.push((name, v));
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_names_and_declaration_order() {
        assert!(valid_name("APP_MODE"));
        assert!(valid_name("1starts.with-digit"));
        assert!(!valid_name("a=b"));
        assert!(!valid_name(""));
        assert!(!valid_name("tab\there"));
        let mut d = Declared::default();
        d.set("B".into(), "1".into());
        d.set("A".into(), "2".into());
        d.set("B".into(), "3".into());
        assert_eq!(d.order, vec!["B", "A"]);
        assert_eq!(d.values["B"], "3");
        let entries = [("x", "1"), ("bad=", "2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(add_env_from("P_", entries, &mut d), vec!["P_bad="]);
        assert_eq!(d.values["P_x"], "1");
    }
}
