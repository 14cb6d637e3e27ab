#!/bin/sh
# Installs what berth, its tests and benchmarks need on a fresh Debian machine (idempotent).
set -eu
need=""
for pair in curl:curl sqlite3:sqlite3 etcd:etcd-server kubectl:kubectl hyperfine:hyperfine \
    crun:crun runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    /bin/busybox:busybox-static ip:iproute2 nft:nftables conntrack:conntrack \
    /usr/bin/docker-registry:docker-registry skopeo:skopeo /usr/bin/time:time \
    /usr/sbin/nginx:nginx wrk:wrk /usr/sbin/dnsmasq:dnsmasq-base; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if [ "${cmd#/}" != "$cmd" ]; then [ -e "$cmd" ] || need="$need $pkg"
    else command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"; fi
done
if [ -n "$need" ]; then
    echo "setup: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $need >/dev/null
fi
# The official Python client, for the client compatibility tests.
python3 -c "import kubernetes" 2>/dev/null || python3 -m pip install -q kubernetes

# Debian's etcd-server starts a system etcd on the default ports; berth's benchmark runs its
# own on other ports, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi

# cgroup v1 hybrid hosts: crun refuses to run while hugetlb sits on the cgroup2 hierarchy only
# ("cgroups in hybrid mode not supported"); mounting hugetlb as a v1 hierarchy fixes that.
if [ -d /sys/fs/cgroup/unified ] && [ -d /sys/fs/cgroup/memory ] && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
    mkdir -p /sys/fs/cgroup/hugetlb 2>/dev/null || true
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb 2>/dev/null || true
fi
