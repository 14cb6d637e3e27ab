#!/bin/sh
# Builds an OCI image layout tarball of a busybox image from the host's /bin/busybox
# (Debian's busybox-static): /bin/busybox, a symlink per applet in /bin, /etc/passwd,
# /etc/group, /tmp, config Cmd ["sh"] with a PATH. No registry or image tool needed.
#
# usage: busybox-image.sh OUT.tar [TAG]     (TAG defaults to busybox:latest; it becomes
#                                            the org.opencontainers.image.ref.name)
set -eu
umask 022

out=${1:?usage: busybox-image.sh OUT.tar [TAG]}
tag=${2:-busybox:latest}
busybox=${BUSYBOX:-/bin/busybox}
case $out in /*) ;; *) out=$(pwd)/$out ;; esac

arch=$(uname -m)
case $arch in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

root=$work/rootfs
mkdir -p "$root/bin" "$root/dev" "$root/etc" "$root/proc" "$root/root" "$root/sys" \
    "$root/var" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
    case $applet in busybox | */*) continue ;; esac
    ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

layout=$work/layout
mkdir -p "$layout/blobs/sha256"

# The layer: reproducible (sorted, fixed owner and mtime), then gzip without a name/time.
(cd "$root" && tar --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime=2000-01-01T00:00:00Z --format=posix --pax-option=delete=atime,delete=ctime \
    -cf "$work/layer.tar" .)
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(wc -c <"$work/layer.tar.gz" | tr -d ' ')
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer_digest"

# put FILE: stores FILE as a blob, prints "<digest> <size>".
put() {
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(wc -c <"$1" | tr -d ' ')
    mv "$1" "$layout/blobs/sha256/$d"
    echo "$d $s"
}

printf '{"architecture":"%s","os":"linux","created":"2000-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$diff_id" >"$work/config.json"
set -- $(put "$work/config.json")
config_digest=$1 config_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
set -- $(put "$work/manifest.json")
manifest_digest=$1 manifest_size=$2

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$tag" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

(cd "$layout" && tar --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime=2000-01-01T00:00:00Z -cf "$out.tmp" oci-layout index.json blobs)
mv "$out.tmp" "$out"
echo "wrote $out ($tag, sha256:$manifest_digest)"
