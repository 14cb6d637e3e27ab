#!/usr/bin/env python3
"""Generates crates/berth-proto/src/messages.json, the message table the decoder reads.

Field numbers and wire types come from the prost bindings of the crate `k8s-pb` (0.9.0,
generated from upstream's `generated.proto` files). The real (Go) type names, JSON field
names and Go field shapes (pointer or not, `omitempty` or not) come from upstream's Go type
sources (`types.go` and friends, whose struct tags carry `protobuf:"...,N,..."` numbers):
prost renames `JSONSchemaProps` to `JsonSchemaProps` and `volumeID` to `volume_id`, so we match
those names back case-insensitively.

Usage:
  tools/gen_messages.py K8S_PB_SRC OUT.json GO_SOURCE...
where each GO_SOURCE is `PREFIX=GITDIR[:SUBDIR]` naming a git directory (bare is fine, read
with `git show HEAD:...`) whose `*.go` files below SUBDIR map to the proto package
`PREFIX.<dir with / replaced by .>`; e.g.
  io.k8s.api=/work/.mirror/kubernetes+api/repo
  io.k8s.apimachinery=/work/.mirror/kubernetes+apimachinery/repo:pkg
  io.k8s.apiextensions-apiserver=/work/.mirror/kubernetes+apiextensions-apiserver/repo:pkg

Table format (JSON object, sorted): fully qualified message name -> list of fields, each
`"TAG|jsonName|KIND|FLAGS"`; KIND is string, bool, int32, int64, double, bytes, `m:NAME` or
`map:K,V` (V a scalar kind or `m:NAME`); FLAGS has `r` for repeated and `z` when a present
zero value (`""`, 0, false) is kept in JSON (Go pointer fields and fields without
`omitempty`). A message name listed under the key `"#arrays"` is a Go `[]string` wrapper
(`ExtraValue`, `Verbs`) whose JSON form is the array of its `items`.
"""

import json
import os
import re
import subprocess
import sys

TOP = {
    "api": "io.k8s.api",
    "apimachinery": "io.k8s.apimachinery",
    "apiextensions_apiserver": "io.k8s.apiextensions-apiserver",
    "kube_aggregator": "io.k8s.kube-aggregator",
    "metrics": "io.k8s.metrics",
}

STRIP = [
    "::core::option::Option",
    "::prost::alloc::vec::Vec",
    "::prost::alloc::boxed::Box",
    "::prost::alloc::collections::BTreeMap",
    "::prost::alloc::string::String",
]

ACRONYMS = {"id", "ip", "ips", "uid", "url", "cidr", "cidrs", "api", "tls", "uri", "dns"}


def package_of(mod_parts):
    return ".".join([TOP.get(mod_parts[0], mod_parts[0])] + mod_parts[1:])


def camel(snake):
    parts = snake.split("_")
    out = parts[0]
    for p in parts[1:]:
        out += p.upper() if p in ACRONYMS else p[:1].upper() + p[1:]
    return out


def parse_prost(root):
    """(package, prostName) -> list of (tag, snake, kind, repeated), kind refs as (pkg, name)."""
    messages = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f != "mod.rs":
                continue
            path = os.path.join(dirpath, f)
            mod = os.path.relpath(dirpath, root).split(os.sep)
            if mod == ["."]:
                continue
            text = open(path, encoding="utf-8").read()
            if "::prost::Message" not in text:
                continue
            parse_prost_file(text, mod, messages)
    return messages


def resolve(mod, path):
    segs = path.split("::")
    cur = list(mod)
    for s in segs[:-1]:
        if s == "super":
            cur.pop()
        elif s != "self":
            cur.append(s)
    return (package_of(cur), segs[-1])


def parse_prost_file(text, mod, messages):
    lines = text.split("\n")
    cur = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        m = re.match(r"pub struct (\w+) \{", line)
        if m:
            cur = []
            messages[(package_of(mod), m.group(1))] = cur
            continue
        if line == "}":
            cur = None
            continue
        if cur is None or not line.startswith("#[prost("):
            continue
        attr = line
        decl = ""
        while i < len(lines):
            decl += lines[i].strip()
            i += 1
            if decl.endswith(",") and decl.count("<") == decl.count(">"):
                break
        tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
        dm = re.match(r"pub (?:r#)?(\w+):(.*),$", decl)
        snake, rtype = dm.group(1), dm.group(2)
        for s in STRIP:
            rtype = rtype.replace(s, "")
        refs = re.findall(r"((?:\w+::)*[A-Z]\w*)", rtype)
        repeated = "repeated" in attr
        mm = re.search(r'btree_map = "(\w+), (\w+)"', attr)
        if mm:
            k, v = mm.group(1), mm.group(2)
            if v == "message":
                v = ("m", resolve(mod, refs[-1]))
            kind = ("map", k, v)
        else:
            t = re.match(r"#\[prost\((\w+)", attr).group(1)
            if t == "message":
                kind = ("m", resolve(mod, refs[-1]))
            else:
                kind = t
        cur.append((tag, snake, kind, repeated))


def git_files(gitdir, sub):
    args = ["git", "--git-dir", gitdir, "ls-tree", "-r", "--name-only", "HEAD"]
    if sub:
        args.append(sub)
    names = subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()
    for n in names:
        base = os.path.basename(n)
        if not n.endswith(".go") or base.endswith("_test.go") or base.startswith("zz_"):
            continue
        if base.startswith("generated") or "/testdata/" in n or "/internal/" in n:
            continue
        yield n


FIELD = re.compile(r"^(?:(\w+)\s+)?(\S+)\s+`(.*)`")


def parse_go(sources):
    """package -> {lower go type name: (go name, {tag: (json, pointer, omitempty)})}, arrays."""
    types = {}
    arrays = set()
    for src in sources:
        prefix, rest = src.split("=", 1)
        gitdir, _, sub = rest.partition(":")
        for n in git_files(gitdir, sub):
            rel = os.path.dirname(n)
            pkg = prefix + "." + rel.replace("/", ".")
            text = subprocess.run(
                ["git", "--git-dir", gitdir, "show", "HEAD:" + n],
                check=True, capture_output=True, text=True).stdout
            parse_go_file(text, types.setdefault(pkg, {}), pkg, arrays)
    return types, arrays


def parse_go_file(text, pkg_types, pkg, arrays):
    cur = None
    for raw in text.split("\n"):
        line = raw.strip()
        m = re.match(r"^type (\w+) struct \{", raw)
        if m:
            cur = {}
            pkg_types[m.group(1).lower()] = (m.group(1), cur)
            continue
        m = re.match(r"^type (\w+) \[\]string\b", raw)
        if m:
            arrays.add((pkg, m.group(1).lower()))
            continue
        if raw.startswith("}"):
            cur = None
            continue
        if cur is None or line.startswith("//"):
            continue
        fm = FIELD.match(line)
        if not fm:
            continue
        tags = fm.group(3)
        pm = re.search(r'protobuf:"([^"]*)"', tags)
        jm = re.search(r'json:"([^"]*)"', tags)
        if not pm or not jm:
            continue
        pparts = pm.group(1).split(",")
        if len(pparts) < 2 or not pparts[1].isdigit():
            continue
        jparts = jm.group(1).split(",")
        cur[int(pparts[1])] = (jparts[0], fm.group(2).startswith("*"), "omitempty" in jparts[1:])


def main():
    root, out = sys.argv[1], sys.argv[2]
    prost = parse_prost(root)
    go, go_arrays = parse_go(sys.argv[3:])

    def real_name(ref):
        pkg, name = ref
        entry = go.get(pkg, {}).get(name.lower())
        return pkg + "." + (entry[0] if entry else name)

    def kind_str(kind):
        if isinstance(kind, str):
            return kind
        if kind[0] == "m":
            return "m:" + real_name(kind[1])
        v = kind[2]
        return "map:%s,%s" % (kind[1], v if isinstance(v, str) else "m:" + real_name(v[1]))

    table = {}
    arrays = []
    missing_go = 0
    for (pkg, name), fields in sorted(prost.items()):
        entry = go.get(pkg, {}).get(name.lower())
        gofields = entry[1] if entry else {}
        full = real_name((pkg, name))
        if (pkg, name.lower()) in go_arrays and [f[1] for f in fields] == ["items"]:
            arrays.append(full)
        rows = []
        for tag, snake, kind, repeated in fields:
            g = gofields.get(tag)
            if g:
                jname, pointer, omitempty = g
                zero = pointer or not omitempty
            else:
                missing_go += 1
                jname = camel(snake)
                zero = kind not in ("string", "bytes")
            flags = ("r" if repeated else "") + ("z" if zero else "")
            rows.append("%d|%s|%s|%s" % (tag, jname, kind_str(kind), flags))
        table[full] = rows
    table["#arrays"] = sorted(arrays)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print("%d messages, %d fields without Go info, %d bytes" %
          (len(table) - 1, missing_go, os.path.getsize(out)), file=sys.stderr)


if __name__ == "__main__":
    main()
