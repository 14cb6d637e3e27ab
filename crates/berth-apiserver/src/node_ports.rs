//! NodePort allocation for Services of `type: NodePort` and `type: LoadBalancer` from the
//! node port range (30000–32767). Like cluster IPs, each allocated port is a key in the
//! store created atomically, so two Services can never get the same node port.

use crate::status::{ApiError, Cause};
use berth_api::registry::ResourceInfo;
use berth_store::{Store, StoreError};
use rand::Rng;
use serde_json::Value;

/// The node port range (upstream's `--service-node-port-range` default).
pub const RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

fn key(port: u16) -> String {
    format!("/registry/ranges/servicenodeports/{port}")
}

/// Whether a Service of this type gets node ports.
fn wants_node_ports(svc: &Value) -> bool {
    matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort") | Some("LoadBalancer")
    )
}

/// The node ports a Service holds.
pub fn held(svc: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| RANGE.contains(p))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn invalid(owner: &Owner<'_>, index: usize, port: i64, why: &str) -> ApiError {
    ApiError::invalid(
        owner.resource,
        owner.name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {port}: {why}"),
            field: format!("spec.ports[{index}].nodePort"),
        }],
    )
}

/// The Service a claim is for (for messages and the allocation record).
pub struct Owner<'a> {
    pub resource: &'a ResourceInfo,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The outcome of [`claim`]: ports newly taken (to free if the write fails) and ports the
/// old state held that the new one gives up (to free once the write succeeded).
#[derive(Debug, Default)]
pub struct Claimed {
    pub allocated: Vec<u16>,
    pub released: Vec<u16>,
}

/// Gives every port of `svc` a node port when its type needs them (keeping the ones `old`
/// had for the same port and protocol, upstream's patchAllocatedValues), and drops them
/// when its type no longer does (upstream's dropTypeDependentFields).
pub async fn claim(
    store: &dyn Store,
    svc: &mut Value,
    old: Option<&Value>,
    who: &Owner<'_>,
) -> Result<Claimed, ApiError> {
    let owner = format!("{}/{}", who.namespace, who.name);
    let owner = owner.as_str();
    let old_held = old.map(held).unwrap_or_default();
    let mut out = Claimed::default();
    if !wants_node_ports(svc) {
        if old.is_none() {
            // On create a nodePort is the user's, and wrong for this type (upstream's
            // validation); on updates it is the one allocated before, dropped with the type.
            let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
            let given = ports.into_iter().flatten().position(|p| {
                p.get("nodePort")
                    .and_then(Value::as_i64)
                    .is_some_and(|n| n != 0)
            });
            if let Some(i) = given {
                let ty = svc
                    .pointer("/spec/type")
                    .and_then(Value::as_str)
                    .unwrap_or("ClusterIP")
                    .to_string();
                return Err(ApiError::invalid(
                    who.resource,
                    who.name,
                    vec![Cause {
                        reason: "FieldValueForbidden".into(),
                        message: format!("Forbidden: may not be used when `type` is '{ty}'"),
                        field: format!("spec.ports[{i}].nodePort"),
                    }],
                ));
            }
        }
        if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for p in ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
        out.released = old_held;
        return Ok(out);
    }
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        out.released = old_held;
        return Ok(out);
    };
    let mut kept: Vec<u16> = Vec::new();
    let result = async {
        for (i, p) in ports.iter_mut().enumerate() {
            let requested = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
            let requested = if requested == 0 {
                // An update that leaves it out keeps the one allocated before.
                let same = |o: &&Value| {
                    o.get("port") == p.get("port")
                        && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                            == p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                };
                old_ports
                    .iter()
                    .find(same)
                    .and_then(|o| o.get("nodePort"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            } else {
                requested
            };
            let port = if requested != 0 {
                let port = u16::try_from(requested)
                    .ok()
                    .filter(|p| RANGE.contains(p))
                    .ok_or_else(|| {
                        invalid(
                            who,
                            i,
                            requested,
                            "provided port is not in the valid range. The range of valid ports is 30000-32767",
                        )
                    })?;
                // Already ours (from the old state or an earlier port of this Service).
                if !old_held.contains(&port) && !kept.contains(&port) {
                    match store.create(&key(port), owner.as_bytes().to_vec()).await {
                        Ok(_) => out.allocated.push(port),
                        Err(StoreError::AlreadyExists(_)) => {
                            return Err(invalid(
                                who,
                                i,
                                requested,
                                "provided port is already allocated",
                            ))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                port
            } else {
                let port = allocate_any(store, owner).await?;
                out.allocated.push(port);
                port
            };
            kept.push(port);
            if let Some(m) = p.as_object_mut() {
                m.insert("nodePort".into(), Value::from(port));
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        release(store, &out.allocated).await;
        return Err(e);
    }
    out.released = old_held.into_iter().filter(|p| !kept.contains(p)).collect();
    Ok(out)
}

async fn allocate_any(store: &dyn Store, owner: &str) -> Result<u16, ApiError> {
    let size = u32::from(RANGE.end() - RANGE.start()) + 1;
    let start = rand::thread_rng().gen_range(0..size);
    for i in 0..size {
        let Ok(port) = u16::try_from(u32::from(*RANGE.start()) + (start + i) % size) else {
            continue;
        };
        match store.create(&key(port), owner.as_bytes().to_vec()).await {
            Ok(_) => return Ok(port),
            Err(StoreError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(
        "failed to allocate a node port: the node port range is full",
    ))
}

/// Frees node ports (missing is fine).
pub async fn release(store: &dyn Store, ports: &[u16]) {
    for p in ports {
        match store.delete(&key(*p), None).await {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!("failed to release node port {p}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::memory::MemoryStore;
    use serde_json::json;

    fn svc() -> &'static ResourceInfo {
        berth_api::registry::find_kind("v1", "Service").expect("services")
    }

    fn who(name: &str) -> Owner<'_> {
        Owner {
            resource: svc(),
            namespace: "default",
            name,
        }
    }

    #[tokio::test]
    async fn node_ports_are_allocated_kept_and_released() {
        let store = MemoryStore::new();
        let mut a = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "protocol": "TCP", "nodePort": 30080},
            {"port": 53, "protocol": "UDP"}]}});
        let c = claim(&store, &mut a, None, &who("a")).await.expect("claim");
        assert_eq!(c.allocated.len(), 2);
        let held_a = held(&a);
        assert!(held_a.contains(&30080));
        // Taken by another Service: 422 with upstream's message.
        let mut b =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let err = claim(&store, &mut b, None, &who("b"))
            .await
            .expect_err("taken");
        assert!(
            err.to_string().contains("Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
            "{err}"
        );
        // An update without nodePorts keeps them.
        let mut a2 = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let c = claim(&store, &mut a2, Some(&a), &who("a"))
            .await
            .expect("update");
        assert!(c.allocated.is_empty() && c.released.is_empty());
        assert_eq!(held(&a2), held_a);
        // Turning into ClusterIP drops and releases them.
        let mut a3 =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}});
        let c = claim(&store, &mut a3, Some(&a2), &who("a"))
            .await
            .expect("type change");
        assert_eq!(c.released, held_a);
        assert!(held(&a3).is_empty());
        release(&store, &c.released).await;
        claim(&store, &mut b, None, &who("b"))
            .await
            .expect("free again");
        let mut cip =
            json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30090}]}});
        let err = claim(&store, &mut cip, None, &who("c"))
            .await
            .expect_err("forbidden");
        assert!(
            err.to_string().contains(
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
            ),
            "{err}"
        );
        let mut out =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(claim(&store, &mut out, None, &who("x")).await.is_err());
    }
}
