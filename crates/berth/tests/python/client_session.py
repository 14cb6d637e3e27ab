"""Drives a berth server with the official Python `kubernetes` client (KUBECONFIG from env)."""
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = [ns.metadata.name for ns in core.list_namespace().items]
assert "default" in names and "kube-system" in names, names

events = []


def watch_configmaps(rv):
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=5):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


rv = core.list_namespaced_config_map("default").metadata.resource_version
t = threading.Thread(target=watch_configmaps, args=(rv,))
t.start()

cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"lang": "python"}), data={"k": "v"})
created = core.create_namespaced_config_map("default", cm)
assert created.metadata.uid
got = core.list_namespaced_config_map("default", label_selector="lang=python")
assert [c.metadata.name for c in got.items] == ["py"], got
core.patch_namespaced_config_map("py", "default", {"data": {"k": "w"}})
assert core.read_namespaced_config_map("py", "default").data["k"] == "w"
try:
    core.create_namespaced_config_map("default", cm)
    raise AssertionError("duplicate create succeeded")
except ApiException as e:
    assert e.status == 409, e
core.delete_namespaced_config_map("py", "default")
t.join(10)
assert events == [("ADDED", "py"), ("MODIFIED", "py"), ("DELETED", "py")], events

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="pyweb"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "pyweb"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "pyweb"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:latest")]),
        ),
    ),
)
apps.create_namespaced_deployment("default", dep)
apps.patch_namespaced_deployment_scale("pyweb", "default", {"spec": {"replicas": 3}})
assert apps.read_namespaced_deployment_scale("pyweb", "default").spec.replicas == 3
assert apps.read_namespaced_deployment("pyweb", "default").spec.strategy.type == "RollingUpdate"
try:
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))
    core.create_namespaced_config_map("default", bad)
    raise AssertionError("invalid create succeeded")
except ApiException as e:
    assert e.status == 422, e
print("python client session ok")
