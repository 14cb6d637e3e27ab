//! A container's environment: the image's variables, then the container's own (values,
//! configMap and secret keys, pod fields), with `$(VAR)` expansion.

use crate::pods::{err, PodError, PodRuntime};
use crate::spec;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;
use kube::ResourceExt;
use std::collections::HashMap;

impl PodRuntime {
    /// The environment of a container: the image's, then the container's (values,
    /// configMap/secret keys, pod fields), with `$(VAR)` expansion.
    pub(crate) async fn env(
        &self,
        pod: &Pod,
        c: &Container,
        image_env: &[String],
        pod_ip: &str,
    ) -> Result<Vec<(String, String)>, PodError> {
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let mut env: Vec<(String, String)> = image_env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let mut known: HashMap<String, String> = env.iter().cloned().collect();
        for e in c.env.clone().unwrap_or_default() {
            let value = if let Some(v) = &e.value {
                spec::expand(v, &known)
            } else if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                    let cm = api
                        .get_opt(&r.name)
                        .await
                        .map_err(|x| err("read env", &pod.name_any(), x))?;
                    match cm.and_then(|c| c.data).and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => v,
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(err(
                                "set env",
                                &pod.name_any(),
                                format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    r.key, ns, r.name
                                ),
                            ))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                    let s = api
                        .get_opt(&r.name)
                        .await
                        .map_err(|x| err("read env", &pod.name_any(), x))?;
                    match s.and_then(|s| s.data).and_then(|d| d.get(&r.key).cloned()) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(err(
                                "set env",
                                &pod.name_any(),
                                format!("couldn't find key {} in Secret {}/{}", r.key, ns, r.name),
                            ))
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" => pod.name_any(),
                        "metadata.namespace" => ns.clone(),
                        "metadata.uid" => pod.uid().unwrap_or_default(),
                        "spec.nodeName" => self.node_name.clone(),
                        "spec.serviceAccountName" => pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.service_account_name.clone())
                            .unwrap_or_default(),
                        "status.podIP" => pod_ip.to_string(),
                        "status.hostIP" => self.node_ip.clone().unwrap_or_default(),
                        other => {
                            return Err(err(
                                "set env",
                                &pod.name_any(),
                                format!("unsupported fieldRef {other}"),
                            ))
                        }
                    }
                } else {
                    return Err(err(
                        "set env",
                        &pod.name_any(),
                        format!(
                            "env {} uses a source this node does not support yet",
                            e.name
                        ),
                    ));
                }
            } else {
                String::new()
            };
            known.insert(e.name.clone(), value.clone());
            env.retain(|(k, _)| *k != e.name);
            env.push((e.name, value));
        }
        Ok(env)
    }
}
