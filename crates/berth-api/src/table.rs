//! Server-side `Table` output (`kubectl get` without `-o`): the column definitions and row
//! cells upstream's printers produce (`pkg/printers/internalversion/printers.go`), including
//! the wide (`priority: 1`) columns, which the server always fills and `kubectl` hides
//! unless `-o wide`. Resources without a specific printer get upstream's default table:
//! `Name` and `Created At`.
//!
//! Cells are computed from `serde_json::Value` objects of any shape: missing or mistyped
//! fields print as upstream prints zero values, never a panic.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::registry::ResourceInfo;

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "A label query over pods that should match the replica count. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

/// One column: name, type, format, priority, description.
type Col = (&'static str, &'static str, &'static str, u8, &'static str);

const NAME: Col = ("Name", "string", "name", 0, NAME_DESC);
const AGE: Col = ("Age", "string", "", 0, AGE_DESC);
const CONTAINERS: Col = ("Containers", "string", "", 1, CONTAINERS_DESC);
const IMAGES: Col = ("Images", "string", "", 1, IMAGES_DESC);
const SELECTOR: Col = ("Selector", "string", "", 1, SELECTOR_DESC);

fn columns(resource: &ResourceInfo) -> Vec<Col> {
    match (resource.group, resource.kind) {
        ("", "Pod") => vec![
            NAME,
            ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            AGE,
            ("IP", "string", "", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            ("Node", "string", "", 1, "NodeName indicates in which node this pod is scheduled."),
            ("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
            ("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
        ],
        ("policy", "PodDisruptionBudget") => vec![
            NAME,
            ("Min Available", "string", "", 0, "The minimum number of pods that must be available."),
            ("Max Unavailable", "string", "", 0, "The maximum number of pods that may be unavailable."),
            ("Allowed Disruptions", "integer", "", 0, "Calculated number of pods that may be disrupted at this time."),
            AGE,
        ],
        ("apps", "ReplicaSet") => vec![
            NAME,
            ("Desired", "integer", "", 0, "Replicas is the number of desired pods."),
            ("Current", "integer", "", 0, "Replicas is the most recently observed number of non-terminating pods."),
            ("Ready", "integer", "", 0, "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("apps", "DaemonSet") => vec![
            NAME,
            ("Desired", "integer", "", 0, "The total number of nodes that should be running the daemon pod."),
            ("Current", "integer", "", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
            ("Ready", "integer", "", 0, "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
            ("Up-to-date", "integer", "", 0, "The total number of nodes that are running updated daemon pod"),
            ("Available", "integer", "", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
            ("Node Selector", "string", "", 0, "NodeSelector is a selector which must be true for the pod to fit on a node."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("batch", "Job") => vec![
            NAME,
            ("Status", "string", "", 0, "Status of the job."),
            ("Completions", "string", "", 0, "The number of pods which reached phase Succeeded."),
            ("Duration", "string", "", 0, "Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("batch", "CronJob") => vec![
            NAME,
            ("Schedule", "string", "", 0, "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
            ("Timezone", "string", "", 0, "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
            ("Suspend", "boolean", "", 0, "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions."),
            ("Active", "integer", "", 0, "A list of pointers to currently running jobs."),
            ("Last Schedule", "string", "", 0, "Information when was the last time the job was successfully scheduled."),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        ("", "Service") => vec![
            NAME,
            ("Type", "string", "", 0, "type determines how the Service is exposed."),
            ("Cluster-IP", "string", "", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
            ("External-IP", "string", "", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
            ("Port(s)", "string", "", 0, "The list of ports that are exposed by this service."),
            AGE,
            ("Selector", "string", "", 1, "Route service traffic to pods with label keys and values matching this selector."),
        ],
        ("networking.k8s.io", "Ingress") => vec![
            NAME,
            ("Class", "string", "", 0, "The name of the IngressClass resource that should be used for additional configuration"),
            ("Hosts", "string", "", 0, "Hosts that incoming requests are matched against before the ingress rule"),
            ("Address", "string", "", 0, "Address is a list containing ingress points for the load-balancer"),
            ("Ports", "string", "", 0, "Ports of TLS configurations that open"),
            AGE,
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            NAME,
            ("Controller", "string", "", 0, "Controller that is responsible for handling this class"),
            ("Parameters", "string", "", 0, "A reference to a resource with additional parameters"),
            AGE,
        ],
        ("apps", "StatefulSet") => vec![
            NAME,
            ("Ready", "string", "", 0, "Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("", "Endpoints") => vec![
            NAME,
            ("Endpoints", "string", "", 0, "The set of all endpoints is the union of all subsets."),
            AGE,
        ],
        ("", "Node") => vec![
            NAME,
            ("Status", "string", "", 0, "The status of the node"),
            ("Roles", "string", "", 0, "The roles of the node"),
            AGE,
            ("Version", "string", "", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", "", 1, "List of addresses reachable to the node."),
            ("External-IP", "string", "", 1, "List of addresses reachable to the node."),
            ("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            ("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            ("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        ("", "Event") | ("events.k8s.io", "Event") => vec![
            ("Last Seen", "string", "", 0, "The time at which the most recent occurrence of this event was recorded."),
            ("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
            ("Reason", "string", "", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            ("Object", "string", "", 0, "The object that this event is about."),
            ("Subobject", "string", "", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
            ("Source", "string", "", 1, "The component reporting this event. Should be a short machine understandable string."),
            ("Message", "string", "", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "string", "", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
            ("Count", "string", "", 1, "The number of times this event has occurred."),
            ("Name", "string", "name", 1, NAME_DESC),
        ],
        ("", "Namespace") => vec![
            NAME,
            ("Status", "string", "", 0, "The status of the namespace"),
            AGE,
        ],
        ("", "Secret") => vec![
            NAME,
            ("Type", "string", "", 0, "Used to facilitate programmatic handling of secret data."),
            ("Data", "string", "", 0, "Data contains the secret data."),
            AGE,
        ],
        ("", "ServiceAccount") => vec![
            NAME,
            ("Secrets", "string", "", 0, "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
            AGE,
        ],
        ("", "PersistentVolume") => vec![
            NAME,
            ("Capacity", "string", "", 0, "capacity is the description of the persistent volume's resources and capacity."),
            ("Access Modes", "string", "", 0, "accessModes contains all ways the volume can be mounted."),
            ("Reclaim Policy", "string", "", 0, "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
            ("Status", "string", "", 0, "phase indicates if a volume is available, bound to a claim, or released by a claim."),
            ("Claim", "string", "", 0, "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
            ("StorageClass", "string", "", 0, "StorageClass of the pv"),
            ("VolumeAttributesClass", "string", "", 0, "VolumeAttributesClass of the pv"),
            ("Reason", "string", "", 0, "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
            AGE,
            ("VolumeMode", "string", "", 1, "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
        ],
        ("", "PersistentVolumeClaim") => vec![
            NAME,
            ("Status", "string", "", 0, "phase represents the current phase of PersistentVolumeClaim."),
            ("Volume", "string", "", 0, "volumeName is the binding reference to the PersistentVolume backing this claim."),
            ("Capacity", "string", "", 0, "capacity represents the actual resources of the underlying volume."),
            ("Access Modes", "string", "", 0, "accessModes contains the actual access modes the volume backing the PVC has."),
            ("StorageClass", "string", "", 0, "StorageClass of the pvc"),
            ("VolumeAttributesClass", "string", "", 0, "VolumeAttributesClass of the pvc"),
            AGE,
            ("VolumeMode", "string", "", 1, "volumeMode defines what type of volume is required by the claim."),
        ],
        ("apps", "Deployment") => vec![
            NAME,
            ("Ready", "string", "", 0, "Number of the pod with ready state"),
            ("Up-to-date", "string", "", 0, "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
            ("Available", "string", "", 0, "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
            AGE,
            CONTAINERS,
            IMAGES,
            ("Selector", "string", "", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        ("", "ConfigMap") => vec![
            NAME,
            ("Data", "string", "", 0, "Data contains the configuration data."),
            AGE,
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            NAME,
            ("Pod-Selector", "string", "", 0, "podSelector selects the pods to which this NetworkPolicy object applies."),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "RoleBinding") => vec![
            NAME,
            ("Role", "string", "", 0, "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
            AGE,
            ("Users", "string", "", 1, "Users in the roleBinding"),
            ("Groups", "string", "", 1, "Groups in the roleBinding"),
            ("ServiceAccounts", "string", "", 1, "ServiceAccounts in the roleBinding"),
        ],
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => vec![
            NAME,
            ("Role", "string", "", 0, "RoleRef can only reference a ClusterRole in the global namespace."),
            AGE,
            ("Users", "string", "", 1, "Users in the clusterRoleBinding"),
            ("Groups", "string", "", 1, "Groups in the clusterRoleBinding"),
            ("ServiceAccounts", "string", "", 1, "ServiceAccounts in the clusterRoleBinding"),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            NAME,
            ("Holder", "string", "", 0, "holderIdentity contains the identity of the holder of a current lease."),
            AGE,
        ],
        ("apps", "ControllerRevision") => vec![
            NAME,
            ("Controller", "string", "", 0, "Controller of the object"),
            ("Revision", "string", "", 0, "Revision indicates the revision of the state represented by Data."),
            AGE,
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            NAME,
            ("AddressType", "string", "", 0, "addressType specifies the type of address carried by this EndpointSlice."),
            ("Ports", "string", "", 0, "ports specifies the list of network ports exposed by each endpoint in this slice."),
            ("Endpoints", "string", "", 0, "endpoints is a list of unique endpoints in this slice."),
            AGE,
        ],
        _ => vec![
            NAME,
            ("Created At", "date", "", 0, AGE_DESC),
        ],
    }
}

/// The `columnDefinitions` of a Table of `resource`, as upstream's
/// `metav1.TableColumnDefinition` objects (`name`, `type`, `format`, `description`,
/// `priority`).
pub fn column_definitions(resource: &ResourceInfo) -> Vec<Value> {
    columns(resource)
        .into_iter()
        .map(|(name, ty, format, priority, description)| {
            json!({
                "name": name,
                "type": ty,
                "format": format,
                "description": description,
                "priority": priority,
            })
        })
        .collect()
}

/// One row's `cells` for `obj`, in the order of [`column_definitions`]; ages are relative
/// to `now`.
pub fn cells(resource: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let o = Obj { v: obj, now };
    match (resource.group, resource.kind) {
        ("", "Pod") => pod_cells(&o),
        ("policy", "PodDisruptionBudget") => vec![
            o.name(),
            json!(int_or_string(o.get("spec.minAvailable")).unwrap_or_else(|| "N/A".into())),
            json!(int_or_string(o.get("spec.maxUnavailable")).unwrap_or_else(|| "N/A".into())),
            json!(o.int("status.disruptionsAllowed")),
            o.age(),
        ],
        ("apps", "ReplicaSet") => {
            let (names, images) = container_cells(o.get("spec.template.spec.containers"));
            vec![
                o.name(),
                json!(o.int("spec.replicas")),
                json!(o.int("status.replicas")),
                json!(o.int("status.readyReplicas")),
                o.age(),
                json!(names),
                json!(images),
                json!(format_label_selector(o.get("spec.selector"))),
            ]
        }
        ("apps", "DaemonSet") => {
            let (names, images) = container_cells(o.get("spec.template.spec.containers"));
            vec![
                o.name(),
                json!(o.int("status.desiredNumberScheduled")),
                json!(o.int("status.currentNumberScheduled")),
                json!(o.int("status.numberReady")),
                json!(o.int("status.updatedNumberScheduled")),
                json!(o.int("status.numberAvailable")),
                json!(format_labels(o.get("spec.template.spec.nodeSelector"))),
                o.age(),
                json!(names),
                json!(images),
                json!(format_label_selector(o.get("spec.selector"))),
            ]
        }
        ("batch", "Job") => job_cells(&o),
        ("batch", "CronJob") => {
            let (names, images) =
                container_cells(o.get("spec.jobTemplate.spec.template.spec.containers"));
            let last = match o.get("status.lastScheduleTime") {
                Some(Value::String(_)) => o.since("status.lastScheduleTime"),
                _ => "<none>".into(),
            };
            let suspend = match o.get("spec.suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            vec![
                o.name(),
                json!(o.str("spec.schedule")),
                json!(o.str_or("spec.timeZone", "<none>")),
                json!(suspend),
                json!(o.len("status.active")),
                json!(last),
                o.age(),
                json!(names),
                json!(images),
                json!(format_label_selector(
                    o.get("spec.jobTemplate.spec.selector")
                )),
            ]
        }
        ("", "Service") => service_cells(&o),
        ("networking.k8s.io", "Ingress") => {
            let rules = o.arr("spec.rules");
            let hosts: Vec<&str> = rules
                .iter()
                .filter_map(|r| r.get("host").and_then(Value::as_str))
                .filter(|h| !h.is_empty())
                .collect();
            let hosts = if hosts.is_empty() {
                "*".to_string()
            } else if rules.len() > 3 {
                let shown: Vec<&str> = rules
                    .iter()
                    .take(3)
                    .filter_map(|r| r.get("host").and_then(Value::as_str))
                    .filter(|h| !h.is_empty())
                    .collect();
                format!("{} + {} more...", shown.join(","), rules.len() - 3)
            } else {
                hosts.join(",")
            };
            let ports = if o.arr("spec.tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                o.name(),
                json!(o.str_or("spec.ingressClassName", "<none>")),
                json!(hosts),
                json!(load_balancer_ingress(o.get("status.loadBalancer.ingress"))),
                json!(ports),
                o.age(),
            ]
        }
        ("networking.k8s.io", "IngressClass") => {
            let params = match o.get("spec.parameters") {
                Some(p @ Value::Object(_)) => {
                    let mut s = str_of(p.get("kind")).to_string();
                    if let Some(g) = p.get("apiGroup").and_then(Value::as_str) {
                        s = format!("{s}.{g}");
                    }
                    format!("{s}/{}", str_of(p.get("name")))
                }
                _ => "<none>".into(),
            };
            vec![
                o.name(),
                json!(o.str("spec.controller")),
                json!(params),
                o.age(),
            ]
        }
        ("apps", "StatefulSet") => {
            let (names, images) = container_cells(o.get("spec.template.spec.containers"));
            vec![
                o.name(),
                json!(format!(
                    "{}/{}",
                    o.int("status.readyReplicas"),
                    o.int_or("spec.replicas", 1)
                )),
                o.age(),
                json!(names),
                json!(images),
            ]
        }
        ("", "Endpoints") => vec![
            o.name(),
            json!(format_endpoints(&o.arr("subsets"))),
            o.age(),
        ],
        ("", "Node") => node_cells(&o),
        ("", "Event") => event_cells(&o, false),
        ("events.k8s.io", "Event") => event_cells(&o, true),
        ("", "Namespace") => vec![o.name(), json!(o.str("status.phase")), o.age()],
        ("", "Secret") => vec![
            o.name(),
            json!(o.str("type")),
            json!(o.len("data")),
            o.age(),
        ],
        ("", "ServiceAccount") => vec![o.name(), json!(o.len("secrets")), o.age()],
        ("", "PersistentVolume") => pv_cells(&o),
        ("", "PersistentVolumeClaim") => pvc_cells(&o),
        ("apps", "Deployment") => {
            let (names, images) = container_cells(o.get("spec.template.spec.containers"));
            let selector = match o.get("spec.selector") {
                None | Some(Value::Null) => String::new(),
                Some(sel) => selector_string(sel).unwrap_or_else(|| "<invalid>".into()),
            };
            vec![
                o.name(),
                json!(format!(
                    "{}/{}",
                    o.int("status.readyReplicas"),
                    o.int_or("spec.replicas", 1)
                )),
                json!(o.int("status.updatedReplicas")),
                json!(o.int("status.availableReplicas")),
                o.age(),
                json!(names),
                json!(images),
                json!(selector),
            ]
        }
        ("", "ConfigMap") => vec![
            o.name(),
            json!(o.len("data") + o.len("binaryData")),
            o.age(),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![
            o.name(),
            json!(format_label_selector(Some(
                o.get("spec.podSelector").unwrap_or(&json!({}))
            ))),
            o.age(),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let (users, groups, sas) = subjects(&o.arr("subjects"));
            vec![
                o.name(),
                json!(format!(
                    "{}/{}",
                    o.str("roleRef.kind"),
                    o.str("roleRef.name")
                )),
                o.age(),
                json!(users),
                json!(groups),
                json!(sas),
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![o.name(), json!(o.str("spec.holderIdentity")), o.age()]
        }
        ("apps", "ControllerRevision") => {
            let controller = o
                .arr("metadata.ownerReferences")
                .into_iter()
                .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
                .map(|r| {
                    let api_version = str_of(r.get("apiVersion"));
                    let group = api_version
                        .rsplit_once('/')
                        .map(|(g, _)| g)
                        .unwrap_or_default();
                    let kind = str_of(r.get("kind"));
                    let gk = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{}/{}", gk.to_lowercase(), str_of(r.get("name")))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                o.name(),
                json!(controller),
                json!(o.int("revision")),
                o.age(),
            ]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports = o.arr("ports");
            let port_list: Vec<String> = ports
                .iter()
                .map(|p| match p.get("port").and_then(Value::as_i64) {
                    Some(n) => n.to_string(),
                    None => p
                        .get("name")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| "<unset>".into()),
                })
                .collect();
            let addresses: Vec<String> = o
                .arr("endpoints")
                .iter()
                .flat_map(|e| {
                    e.get("addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|a| str_of(Some(&a)).to_string())
                .collect();
            vec![
                o.name(),
                json!(o.str("addressType")),
                json!(list_with_more(&port_list, 3)),
                json!(list_with_more(&addresses, 3)),
                o.age(),
            ]
        }
        _ => {
            let created = match o.get("metadata.creationTimestamp") {
                Some(Value::String(s)) => s.clone(),
                _ => "0001-01-01T00:00:00Z".to_string(),
            };
            vec![o.name(), json!(created)]
        }
    }
}

// ---------------------------------------------------------------------------------------
// object access

struct Obj<'a> {
    v: &'a Value,
    now: DateTime<Utc>,
}

impl<'a> Obj<'a> {
    fn get(&self, path: &str) -> Option<&'a Value> {
        path.split('.').try_fold(self.v, |v, k| v.get(k))
    }
    fn str(&self, path: &str) -> String {
        str_of(self.get(path)).to_string()
    }
    fn str_or(&self, path: &str, default: &str) -> String {
        match self.get(path).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => default.to_string(),
        }
    }
    fn int(&self, path: &str) -> i64 {
        self.int_or(path, 0)
    }
    fn int_or(&self, path: &str, default: i64) -> i64 {
        self.get(path).and_then(Value::as_i64).unwrap_or(default)
    }
    fn arr(&self, path: &str) -> Vec<&'a Value> {
        match self.get(path) {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => Vec::new(),
        }
    }
    fn len(&self, path: &str) -> i64 {
        let n = match self.get(path) {
            Some(Value::Array(a)) => a.len(),
            Some(Value::Object(m)) => m.len(),
            _ => 0,
        };
        i64::try_from(n).unwrap_or(i64::MAX)
    }
    fn name(&self) -> Value {
        json!(self.str("metadata.name"))
    }
    fn since(&self, path: &str) -> String {
        translate_timestamp_since(self.get(path), self.now)
    }
    fn age(&self) -> Value {
        json!(self.since("metadata.creationTimestamp"))
    }
    fn deleting(&self) -> bool {
        matches!(
            self.get("metadata.deletionTimestamp"),
            Some(Value::String(_))
        )
    }
}

fn str_of(v: Option<&Value>) -> &str {
    v.and_then(Value::as_str).unwrap_or("")
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v.and_then(Value::as_str)?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Upstream's `translateTimestampSince`: `<unknown>` for a missing time, else the human
/// duration since it.
fn translate_timestamp_since(v: Option<&Value>, now: DateTime<Utc>) -> String {
    match parse_time(v) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

/// Upstream's `duration.HumanDuration`: `5s`, `3m20s`, `10m`, `2h5m`, `20h`, `3d4h`,
/// `30d`, `2y10d`, `9y`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{}h", hours / 24, h);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{}d", hours / 24 / 365, dy);
    }
    format!("{}y", hours / 24 / 365)
}

fn int_or_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn container_cells(containers: Option<&Value>) -> (String, String) {
    let list = containers
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = list.iter().map(|c| str_of(c.get("name"))).collect();
    let images: Vec<&str> = list.iter().map(|c| str_of(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

/// `k=v` pairs sorted by key, `<none>` when empty (upstream's `labels.FormatLabels`).
fn format_labels(v: Option<&Value>) -> String {
    let mut pairs: Vec<String> = match v {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", str_of(Some(v))))
            .collect(),
        _ => Vec::new(),
    };
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// Upstream's `labels.Selector.String()` of a `LabelSelector`; `None` when invalid.
pub(crate) fn selector_string(sel: &Value) -> Option<String> {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels") {
        match labels {
            Value::Object(m) => {
                for (k, v) in m {
                    reqs.push((k.clone(), format!("{k}={}", v.as_str()?)));
                }
            }
            Value::Null => {}
            _ => return None,
        }
    }
    if let Some(exprs) = sel.get("matchExpressions") {
        match exprs {
            Value::Array(a) => {
                for e in a {
                    let key = e.get("key").and_then(Value::as_str)?.to_string();
                    let mut values: Vec<&str> = match e.get("values") {
                        Some(Value::Array(vs)) => {
                            vs.iter().map(|v| v.as_str()).collect::<Option<_>>()?
                        }
                        _ => Vec::new(),
                    };
                    values.sort_unstable();
                    values.dedup();
                    let s = match e.get("operator").and_then(Value::as_str)? {
                        "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
                        "NotIn" if !values.is_empty() => {
                            format!("{key} notin ({})", values.join(","))
                        }
                        "Exists" if values.is_empty() => key.clone(),
                        "DoesNotExist" if values.is_empty() => format!("!{key}"),
                        _ => return None,
                    };
                    reqs.push((key, s));
                }
            }
            Value::Null => {}
            _ => return None,
        }
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Upstream's `metav1.FormatLabelSelector`: `<none>` for empty, `<error>` for invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match sel {
        None | Some(Value::Null) => "<none>".into(),
        Some(s) => match selector_string(s) {
            Some(s) if s.is_empty() => "<none>".into(),
            Some(s) => s,
            None => "<error>".into(),
        },
    }
}

fn list_with_more(list: &[String], max: usize) -> String {
    if list.len() > max {
        return format!("{} + {} more...", list[..max].join(","), list.len() - max);
    }
    if list.is_empty() {
        return "<unset>".into();
    }
    list.join(",")
}

fn load_balancer_ingress(v: Option<&Value>) -> String {
    let list = v.and_then(Value::as_array).cloned().unwrap_or_default();
    let parts: Vec<String> = list
        .iter()
        .filter_map(|i| {
            let ip = str_of(i.get("ip"));
            let host = str_of(i.get("hostname"));
            if !ip.is_empty() {
                Some(ip.to_string())
            } else if !host.is_empty() {
                Some(host.to_string())
            } else {
                None
            }
        })
        .collect();
    parts.join(",")
}

// ---------------------------------------------------------------------------------------
// per-kind printers

fn condition_true(conditions: &[&Value], ty: &str) -> bool {
    conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some(ty)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn pod_cells(o: &Obj<'_>) -> Vec<Value> {
    let containers = o.arr("spec.containers");
    let init_specs = o.arr("spec.initContainers");
    let restartable = |name: &str| {
        init_specs.iter().any(|c| {
            str_of(c.get("name")) == name
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    let total = containers.len()
        + init_specs
            .iter()
            .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"))
            .count();
    let phase = o.str("status.phase");
    let status_reason = o.str("status.reason");
    let mut reason = if status_reason.is_empty() {
        phase.clone()
    } else {
        status_reason.clone()
    };
    let conditions = o.arr("status.conditions");
    for c in &conditions {
        if str_of(c.get("type")) == "PodScheduled" && str_of(c.get("reason")) == "SchedulingGated" {
            reason = "SchedulingGated".into();
        }
    }

    let mut restarts: i64 = 0;
    let mut ready = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut sidecar_restarts: i64 = 0;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;
    let later = |cur: Option<DateTime<Utc>>, t: Option<DateTime<Utc>>| match (cur, t) {
        (Some(a), Some(b)) if b > a => Some(b),
        (None, b) => b,
        (a, _) => a,
    };

    let init_statuses = o.arr("status.initContainerStatuses");
    let mut initializing = false;
    for (i, cs) in init_statuses.iter().enumerate() {
        let count = cs.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        restarts += count;
        let finished = cs
            .get("lastState")
            .and_then(|s| s.get("terminated"))
            .and_then(|t| parse_time(t.get("finishedAt")));
        last_restart = later(last_restart, finished);
        let name = str_of(cs.get("name"));
        let is_sidecar = restartable(name);
        if is_sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let state = cs.get("state");
        let terminated = state.and_then(|s| s.get("terminated"));
        let waiting = state.and_then(|s| s.get("waiting"));
        let exit_code = terminated
            .and_then(|t| t.get("exitCode"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if terminated.is_some() && exit_code == 0 {
            continue;
        }
        if is_sidecar && cs.get("started").and_then(Value::as_bool) == Some(true) {
            if cs.get("ready").and_then(Value::as_bool) == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = str_of(t.get("reason"));
            reason = if r.is_empty() {
                let signal = t.get("signal").and_then(Value::as_i64).unwrap_or(0);
                if signal != 0 {
                    format!("Init:Signal:{signal}")
                } else {
                    format!("Init:ExitCode:{exit_code}")
                }
            } else {
                format!("Init:{r}")
            };
        } else if let Some(r) = waiting
            .map(|w| str_of(w.get("reason")))
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(&conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in o.arr("status.containerStatuses").iter().rev() {
            restarts += cs.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
            let finished = cs
                .get("lastState")
                .and_then(|s| s.get("terminated"))
                .and_then(|t| parse_time(t.get("finishedAt")));
            last_restart = later(last_restart, finished);
            let state = cs.get("state");
            let waiting_reason = state
                .and_then(|s| s.get("waiting"))
                .map(|w| str_of(w.get("reason")));
            let terminated = state.and_then(|s| s.get("terminated"));
            let running = state.and_then(|s| s.get("running")).is_some();
            if let Some(r) = waiting_reason.filter(|r| !r.is_empty()) {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                let r = str_of(t.get("reason"));
                reason = if !r.is_empty() {
                    r.to_string()
                } else {
                    let signal = t.get("signal").and_then(Value::as_i64).unwrap_or(0);
                    if signal != 0 {
                        format!("Signal:{signal}")
                    } else {
                        let code = t.get("exitCode").and_then(Value::as_i64).unwrap_or(0);
                        format!("ExitCode:{code}")
                    }
                };
            } else if cs.get("ready").and_then(Value::as_bool) == Some(true) && running {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(&conditions, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if o.deleting() && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if o.deleting() && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(o.now - t)),
        _ => restarts.to_string(),
    };

    let pod_ip = o
        .arr("status.podIPs")
        .first()
        .map(|p| str_of(p.get("ip")).to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into());
    let gates = o.arr("spec.readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = str_of(g.get("conditionType"));
                conditions
                    .iter()
                    .find(|c| str_of(c.get("type")) == ty)
                    .is_some_and(|c| str_of(c.get("status")) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        o.name(),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        o.age(),
        json!(pod_ip),
        json!(o.str_or("spec.nodeName", "<none>")),
        json!(o.str_or("status.nominatedNodeName", "<none>")),
        json!(readiness_gates),
    ]
}

fn job_cells(o: &Obj<'_>) -> Vec<Value> {
    let succeeded = o.int("status.succeeded");
    let completions = match o.get("spec.completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = o.int("spec.parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(o.get("status.startTime"));
    let end = parse_time(o.get("status.completionTime"));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(o.now - s),
        (Some(s), Some(e)) => human_duration(e - s),
    };
    let conditions = o.arr("status.conditions");
    let status = if condition_true(&conditions, "Complete") {
        "Complete"
    } else if condition_true(&conditions, "Failed") {
        "Failed"
    } else if o.deleting() {
        "Terminating"
    } else if condition_true(&conditions, "Suspended") {
        "Suspended"
    } else if condition_true(&conditions, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(&conditions, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (names, images) = container_cells(o.get("spec.template.spec.containers"));
    vec![
        o.name(),
        json!(status),
        json!(completions),
        json!(duration),
        o.age(),
        json!(names),
        json!(images),
        json!(format_label_selector(o.get("spec.selector"))),
    ]
}

fn service_cells(o: &Obj<'_>) -> Vec<Value> {
    let svc_type = o.str("spec.type");
    let cluster_ips = o.arr("spec.clusterIPs");
    let internal_ip = cluster_ips
        .first()
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            o.get("spec.clusterIP")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "<none>".into());
    let external_ips: Vec<String> = o
        .arr("spec.externalIPs")
        .iter()
        .map(|v| str_of(Some(v)).to_string())
        .collect();
    let external = match svc_type.as_str() {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(o.get("status.loadBalancer.ingress"));
            if !external_ips.is_empty() {
                let mut all: Vec<String> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').map(str::to_string).collect()
                };
                all.extend(external_ips);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => o.str("spec.externalName"),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = o
        .arr("spec.ports")
        .iter()
        .map(|p| {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            let proto = str_of(p.get("protocol"));
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        o.name(),
        json!(svc_type),
        json!(internal_ip),
        json!(external),
        json!(ports),
        o.age(),
        json!(format_labels(o.get("spec.selector"))),
    ]
}

fn format_endpoints(subsets: &[&Value]) -> String {
    if subsets.is_empty() {
        return "<none>".into();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut count = 0usize;
    for ss in subsets {
        let addresses: Vec<&str> = ss
            .get("addresses")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| str_of(x.get("ip"))).collect())
            .unwrap_or_default();
        let ports: Vec<i64> = ss
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| p.get("port").and_then(Value::as_i64).unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        if ports.is_empty() {
            count += addresses.len();
            for ip in &addresses {
                if list.len() < max {
                    list.push(ip.to_string());
                }
            }
        } else {
            for port in &ports {
                count += addresses.len();
                for ip in &addresses {
                    if list.len() < max {
                        if ip.contains(':') {
                            list.push(format!("[{ip}]:{port}"));
                        } else {
                            list.push(format!("{ip}:{port}"));
                        }
                    }
                }
            }
        }
    }
    let ret = list.join(",");
    if count > max {
        format!("{ret} + {} more...", count - max)
    } else {
        ret
    }
}

fn node_cells(o: &Obj<'_>) -> Vec<Value> {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = o
        .arr("status.conditions")
        .iter()
        .rev()
        .find(|c| str_of(c.get("type")) == "Ready")
    {
        if str_of(c.get("status")) == "True" {
            status.push("Ready".into());
        } else {
            status.push("NotReady".into());
        }
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if o.get("spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled".into());
    }
    let mut roles = BTreeSet::new();
    if let Some(Value::Object(labels)) = o.get("metadata.labels") {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                let v = str_of(Some(v));
                if !v.is_empty() {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |ty: &str| {
        o.arr("status.addresses")
            .iter()
            .find(|a| str_of(a.get("type")) == ty)
            .map(|a| str_of(a.get("address")).to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        o.name(),
        json!(status.join(",")),
        json!(roles),
        o.age(),
        json!(o.str("status.nodeInfo.kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(o.str_or("status.nodeInfo.osImage", "<unknown>")),
        json!(o.str_or("status.nodeInfo.kernelVersion", "<unknown>")),
        json!(o.str_or("status.nodeInfo.containerRuntimeVersion", "<unknown>")),
    ]
}

fn event_cells(o: &Obj<'_>, events_v1: bool) -> Vec<Value> {
    // events.k8s.io/v1 field names mapped onto the core/v1 ones the printer reads.
    let (first_ts, last_ts, count_f, involved, message, source) = if events_v1 {
        (
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
            "deprecatedCount",
            "regarding",
            "note",
            "deprecatedSource",
        )
    } else {
        (
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "involvedObject",
            "message",
            "source",
        )
    };
    let first = if parse_time(o.get(first_ts)).is_some() {
        o.since(first_ts)
    } else {
        o.since("eventTime")
    };
    let mut last = if parse_time(o.get(last_ts)).is_some() {
        o.since(last_ts)
    } else {
        first.clone()
    };
    let mut count = o.int(count_f);
    if matches!(o.get("series"), Some(Value::Object(_))) {
        last = o.since("series.lastObservedTime");
        count = o.int("series.count");
    } else if count == 0 {
        count = 1;
    }
    let kind = o.str(&format!("{involved}.kind")).to_lowercase();
    let name = o.str(&format!("{involved}.name"));
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    let first_non_empty = |a: String, b: String| if a.is_empty() { b } else { a };
    let component = first_non_empty(
        o.str(&format!("{source}.component")),
        o.str("reportingController"),
    );
    let host = first_non_empty(o.str(&format!("{source}.host")), o.str("reportingInstance"));
    let source = if component.is_empty() {
        String::new()
    } else if host.is_empty() {
        component
    } else {
        format!("{component}, {host}")
    };
    vec![
        json!(last),
        json!(o.str("type")),
        json!(o.str("reason")),
        json!(target),
        json!(o.str(&format!("{involved}.fieldPath"))),
        json!(source),
        json!(o.str(message).trim()),
        json!(first),
        json!(count),
        o.name(),
    ]
}

fn access_modes(modes: &[&Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if has(mode) {
            out.push(short);
        }
    }
    out.join(",")
}

fn storage_class(o: &Obj<'_>) -> String {
    match o
        .get("metadata.annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str)
    {
        Some(c) => c.to_string(),
        None => o.str("spec.storageClassName"),
    }
}

fn pv_cells(o: &Obj<'_>) -> Vec<Value> {
    let claim = match o.get("spec.claimRef") {
        Some(Value::Object(c)) => {
            format!("{}/{}", str_of(c.get("namespace")), str_of(c.get("name")))
        }
        _ => String::new(),
    };
    let phase = if o.deleting() {
        "Terminating".to_string()
    } else {
        o.str("status.phase")
    };
    vec![
        o.name(),
        json!(o.str_or("spec.capacity.storage", "0")),
        json!(access_modes(&o.arr("spec.accessModes"))),
        json!(o.str("spec.persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(o)),
        json!(o.str_or("spec.volumeAttributesClassName", "<unset>")),
        json!(o.str("status.reason")),
        o.age(),
        json!(o.str_or("spec.volumeMode", "<unset>")),
    ]
}

fn pvc_cells(o: &Obj<'_>) -> Vec<Value> {
    let phase = if o.deleting() {
        "Terminating".to_string()
    } else {
        o.str("status.phase")
    };
    let volume = o.str("spec.volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            o.str_or("status.capacity.storage", "0"),
            access_modes(&o.arr("status.accessModes")),
        )
    };
    vec![
        o.name(),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        json!(o.str_or("spec.volumeAttributesClassName", "<unset>")),
        o.age(),
        json!(o.str_or("spec.volumeMode", "<unset>")),
    ]
}

fn subjects(list: &[&Value]) -> (String, String, String) {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for s in list {
        let name = str_of(s.get("name"));
        match str_of(s.get("kind")) {
            "ServiceAccount" => sas.push(format!("{}/{name}", str_of(s.get("namespace")))),
            "User" => users.push(name.to_string()),
            "Group" => groups.push(name.to_string()),
            _ => {}
        }
    }
    (users.join(", "), groups.join(", "), sas.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RESOURCES;

    fn res(group: &str, kind: &str) -> &'static ResourceInfo {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.group == group)
            .expect("resource")
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-10T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn names(cols: &[Value]) -> Vec<String> {
        cols.iter()
            .map(|c| c["name"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn human_durations() {
        let d = |s: i64| human_duration(Duration::seconds(s));
        assert_eq!(d(-5), "<invalid>");
        assert_eq!(d(-1), "0s");
        assert_eq!(d(5), "5s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(120), "2m");
        assert_eq!(d(200), "3m20s");
        assert_eq!(d(600), "10m");
        assert_eq!(d(179 * 60), "179m");
        assert_eq!(d(3 * 3600), "3h");
        assert_eq!(d(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(d(20 * 3600), "20h");
        assert_eq!(d(51 * 3600), "2d3h");
        assert_eq!(d(48 * 3600), "2d");
        assert_eq!(d(30 * 86400), "30d");
        assert_eq!(d(3 * 365 * 86400 + 10 * 86400), "3y10d");
        assert_eq!(d(9 * 365 * 86400), "9y");
    }

    #[test]
    fn every_resource_has_matching_cells() {
        for r in RESOURCES {
            let cols = column_definitions(r);
            assert!(cols.iter().any(|c| c["format"] == "name"), "{}", r.kind);
            for obj in [json!({}), json!(null), json!({"spec": 1, "status": "x"})] {
                assert_eq!(cells(r, &obj, now()).len(), cols.len(), "{}", r.kind);
            }
        }
        let role = res("rbac.authorization.k8s.io", "Role");
        assert_eq!(names(&column_definitions(role)), ["Name", "Created At"]);
        assert_eq!(column_definitions(role)[1]["type"], "date");
        let c = cells(
            role,
            &json!({"metadata": {"name": "r", "creationTimestamp": "2025-01-01T00:00:00Z"}}),
            now(),
        );
        assert_eq!(c, vec![json!("r"), json!("2025-01-01T00:00:00Z")]);
    }

    #[test]
    fn pod_rows() {
        let pods = res("", "Pod");
        assert_eq!(
            names(&column_definitions(pods)),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(column_definitions(pods)[5]["priority"], 1);
        let running = json!({
            "metadata": {"name": "p", "creationTimestamp": "2025-01-10T11:56:40Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                     "lastState": {"terminated": {"finishedAt": "2025-01-10T11:55:00Z"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]}
        });
        let c = cells(pods, &running, now());
        assert_eq!(c[0], "p");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2 (5m ago)");
        assert_eq!(c[4], "3m20s");
        assert_eq!(c[5], "10.0.0.5");
        assert_eq!(c[6], "n1");
        assert_eq!(c[7], "<none>");
        assert_eq!(c[8], "<none>");

        let pending = json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Pending"}});
        let c = cells(pods, &pending, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Pending");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "<unknown>");

        let terminating = json!({"metadata": {"name": "t", "deletionTimestamp": "2025-01-10T11:00:00Z"},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(cells(pods, &terminating, now())[2], "Terminating");

        let init = json!({"metadata": {"name": "i"},
            "spec": {"initContainers": [{"name": "x"}, {"name": "y"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "x", "state": {"terminated": {"exitCode": 0}}},
                {"name": "y", "state": {"running": {}}}]}});
        assert_eq!(cells(pods, &init, now())[2], "Init:1/2");

        let done = json!({"metadata": {"name": "d"}, "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}});
        assert_eq!(cells(pods, &done, now())[2], "Completed");
    }

    #[test]
    fn workload_rows() {
        let d = res("apps", "Deployment");
        assert_eq!(
            names(&column_definitions(d)),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let obj = json!({"metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                "template": {"spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = cells(d, &obj, now());
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], 3);
        assert_eq!(c[3], 2);
        assert_eq!(c[5], "a,b");
        assert_eq!(c[6], "nginx,busybox");
        assert_eq!(c[7], "app=web,tier=fe");

        let rs = res("apps", "ReplicaSet");
        let c = cells(rs, &obj, now());
        assert_eq!(c[1], 3);
        assert_eq!(c[3], 2);

        let sts = res("apps", "StatefulSet");
        assert_eq!(cells(sts, &obj, now())[1], "2/3");

        let ds = res("apps", "DaemonSet");
        let c = cells(
            ds,
            &json!({"spec": {"template": {"spec": {"nodeSelector": {"b": "2", "a": "1"}}}}}),
            now(),
        );
        assert_eq!(c[6], "a=1,b=2");
        assert_eq!(c[10], "<none>");
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"b": "1"}, "matchExpressions": [
            {"key": "a", "operator": "In", "values": ["y", "x"]},
            {"key": "c", "operator": "DoesNotExist"},
            {"key": "d", "operator": "Exists"},
            {"key": "e", "operator": "NotIn", "values": ["z"]}]});
        assert_eq!(
            selector_string(&sel).as_deref(),
            Some("a in (x,y),b=1,!c,d,e notin (z)")
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})
            )),
            "<error>"
        );
    }

    #[test]
    fn job_rows() {
        let j = res("batch", "Job");
        assert_eq!(
            names(&column_definitions(j))[..5],
            ["Name", "Status", "Completions", "Duration", "Age"]
        );
        let obj = json!({"metadata": {"name": "pi"}, "spec": {"completions": 1},
            "status": {"succeeded": 1, "startTime": "2025-01-10T11:00:00Z", "completionTime": "2025-01-10T11:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        let c = cells(j, &obj, now());
        assert_eq!(c[1], "Complete");
        assert_eq!(c[2], "1/1");
        assert_eq!(c[3], "42s");
        let running = json!({"spec": {"parallelism": 2}, "status": {}});
        let c = cells(j, &running, now());
        assert_eq!(c[1], "Running");
        assert_eq!(c[2], "0/1 of 2");
        assert_eq!(c[3], "");

        let cj = res("batch", "CronJob");
        let c = cells(
            cj,
            &json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/1 * * * *", "suspend": false}}),
            now(),
        );
        assert_eq!(c[1], "*/1 * * * *");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "False");
        assert_eq!(c[4], 0);
        assert_eq!(c[5], "<none>");
    }

    #[test]
    fn service_rows() {
        let s = res("", "Service");
        assert_eq!(
            names(&column_definitions(s)),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let obj = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort",
            "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}}});
        let c = cells(s, &obj, now());
        assert_eq!(c[1], "NodePort");
        assert_eq!(c[2], "10.43.0.10");
        assert_eq!(c[3], "<none>");
        assert_eq!(c[4], "80:30080/TCP,53/UDP");
        assert_eq!(c[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer"}});
        let c = cells(s, &lb, now());
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn node_and_namespace_rows() {
        let n = res("", "Node");
        let obj = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}});
        let c = cells(n, &obj, now());
        assert_eq!(c[1], "Ready,SchedulingDisabled");
        assert_eq!(c[2], "control-plane,master");
        assert_eq!(c[4], "v1.33.0");
        assert_eq!(c[5], "10.0.0.1");
        assert_eq!(c[6], "<none>");
        assert_eq!(c[7], "Debian");
        assert_eq!(c[8], "<unknown>");
        let ns = res("", "Namespace");
        let c = cells(
            ns,
            &json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}}),
            now(),
        );
        assert_eq!(c[1], "Active");
    }

    #[test]
    fn event_rows() {
        let e = res("", "Event");
        assert_eq!(
            names(&column_definitions(e)),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let obj = json!({"metadata": {"name": "p.1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
            "source": {"component": "default-scheduler"}, "message": " assigned \n",
            "firstTimestamp": "2025-01-10T11:59:00Z", "lastTimestamp": "2025-01-10T11:59:50Z", "count": 2});
        let c = cells(e, &obj, now());
        assert_eq!(c[0], "10s");
        assert_eq!(c[3], "pod/p");
        assert_eq!(c[4], "spec.containers{a}");
        assert_eq!(c[5], "default-scheduler");
        assert_eq!(c[6], "assigned");
        assert_eq!(c[7], "60s");
        assert_eq!(c[8], 2);
        assert_eq!(c[9], "p.1");
        let ev1 = res("events.k8s.io", "Event");
        let obj = json!({"metadata": {"name": "x"}, "regarding": {"kind": "Node", "name": "n"},
            "note": "hi", "eventTime": "2025-01-10T11:59:30.000000Z", "reportingController": "kubelet", "reportingInstance": "n"});
        let c = cells(ev1, &obj, now());
        assert_eq!(c[0], "30s");
        assert_eq!(c[3], "node/n");
        assert_eq!(c[5], "kubelet, n");
        assert_eq!(c[8], 1);
    }

    #[test]
    fn misc_rows() {
        let cm = res("", "ConfigMap");
        assert_eq!(
            cells(
                cm,
                &json!({"data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}),
                now()
            )[1],
            3
        );
        let sec = res("", "Secret");
        let c = cells(sec, &json!({"type": "Opaque", "data": {"a": ""}}), now());
        assert_eq!((c[1].clone(), c[2].clone()), (json!("Opaque"), json!(1)));
        let ep = res("", "Endpoints");
        let obj = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cells(ep, &obj, now())[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        assert_eq!(cells(ep, &json!({}), now())[1], "<none>");
        let eps = res("discovery.k8s.io", "EndpointSlice");
        let c = cells(
            eps,
            &json!({"addressType": "IPv4", "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            now(),
        );
        assert_eq!(
            (c[1].clone(), c[2].clone(), c[3].clone()),
            (json!("IPv4"), json!("80"), json!("10.0.0.1"))
        );
        assert_eq!(cells(eps, &json!({}), now())[2], "<unset>");
        let lease = res("coordination.k8s.io", "Lease");
        assert_eq!(
            cells(lease, &json!({"spec": {"holderIdentity": "n1"}}), now())[1],
            "n1"
        );
        let rb = res("rbac.authorization.k8s.io", "RoleBinding");
        let c = cells(
            rb,
            &json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}]}),
            now(),
        );
        assert_eq!(c[1], "ClusterRole/view");
        assert_eq!(c[3], "u");
        assert_eq!(c[5], "ns/sa");
        let cr = res("apps", "ControllerRevision");
        let c = cells(
            cr,
            &json!({"revision": 2, "metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}}),
            now(),
        );
        assert_eq!(c[1], "statefulset.apps/web");
        assert_eq!(c[2], 2);
        let pvc = res("", "PersistentVolumeClaim");
        let c = cells(
            pvc,
            &json!({"spec": {"volumeName": "pv1", "storageClassName": "local", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}}),
            now(),
        );
        assert_eq!(
            c[1..7].to_vec(),
            vec![
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO"),
                json!("local"),
                json!("<unset>")
            ]
        );
        let ing = res("networking.k8s.io", "Ingress");
        let c = cells(
            ing,
            &json!({"spec": {"rules": [{"host": "a.example"}], "tls": [{}]}}),
            now(),
        );
        assert_eq!(
            c[1..5].to_vec(),
            vec![
                json!("<none>"),
                json!("a.example"),
                json!(""),
                json!("80, 443")
            ]
        );
        let pdb = res("policy", "PodDisruptionBudget");
        let c = cells(pdb, &json!({"spec": {"minAvailable": 1}}), now());
        assert_eq!(c[1..4].to_vec(), vec![json!("1"), json!("N/A"), json!(0)]);
    }
}
