//! A pod's volumes on the node: configMap, secret, emptyDir and hostPath directories, and the
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` files its containers mount.

use crate::pods::{blocking, err, PodError, PodRuntime};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;
use kube::ResourceExt;
use std::collections::HashMap;
use std::path::PathBuf;

impl PodRuntime {
    /// Writes configMap, secret and downward files and makes emptyDirs; returns volume name
    /// → host path.
    pub(crate) async fn volumes(&self, pod: &Pod) -> Result<HashMap<String, PathBuf>, PodError> {
        let name = pod.name_any();
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let uid = pod.uid().unwrap_or_default();
        let mut out = HashMap::new();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for v in volumes {
            let dir = self.pod_dir(&uid).join("volumes").join(&v.name);
            let files: Option<Vec<(String, Vec<u8>)>> = if let Some(cm) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                let got = api
                    .get_opt(&cm.name)
                    .await
                    .map_err(|e| err("read a configMap volume", &name, e))?;
                match got {
                    Some(c) => {
                        let mut f: Vec<(String, Vec<u8>)> = c
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        f.extend(
                            c.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        Some(f)
                    }
                    None if cm.optional == Some(true) => Some(Vec::new()),
                    None => {
                        return Err(err(
                            "mount volumes",
                            &name,
                            format!("configmap \"{}\" not found", cm.name),
                        ))
                    }
                }
            } else if let Some(sec) = &v.secret {
                let secret_name = sec.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .get_opt(&secret_name)
                    .await
                    .map_err(|e| err("read a secret volume", &name, e))?
                {
                    Some(s) => Some(
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect(),
                    ),
                    None if sec.optional == Some(true) => Some(Vec::new()),
                    None => {
                        return Err(err(
                            "mount volumes",
                            &name,
                            format!("secret \"{secret_name}\" not found"),
                        ))
                    }
                }
            } else {
                None
            };
            let path = if let Some(files) = files {
                let d = dir.clone();
                blocking(move || -> std::io::Result<()> {
                    std::fs::create_dir_all(&d)?;
                    for (k, v) in files {
                        if k.contains('/') || k.starts_with("..") {
                            continue;
                        }
                        std::fs::write(d.join(k), v)?;
                    }
                    Ok(())
                })
                .await
                .map_err(|e| err("write volume files", &name, e))?
                .map_err(|e| err("write volume files", &name, e))?;
                dir
            } else if let Some(hp) = &v.host_path {
                PathBuf::from(&hp.path)
            } else if v.empty_dir.is_some() {
                std::fs::create_dir_all(&dir).map_err(|e| err("make an emptyDir", &name, e))?;
                dir
            } else {
                return Err(err(
                    "mount volumes",
                    &name,
                    format!(
                        "volume {:?} has a type this node does not support yet",
                        v.name
                    ),
                ));
            };
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` for the pod.
    pub(crate) fn etc_files(&self, pod: &Pod, ip: &str) -> Result<PathBuf, std::io::Error> {
        let dir = self.pod_dir(&pod.uid().unwrap_or_default()).join("etc");
        std::fs::create_dir_all(&dir)?;
        let name = pod.name_any();
        std::fs::write(
            dir.join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
            ),
        )?;
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        std::fs::write(dir.join("hostname"), format!("{name}\n"))?;
        Ok(dir)
    }
}
