#!/usr/bin/env python3
"""Renders every kustomization under deploy/k8s and validates what it gives.

Run by .ci/run, in a virtualenv with PyYAML and kubernetes-validate:

    python3 deploy/k8s/validate.py

1. Rendering. Each directory with a kustomization.yaml is rendered by the small
   renderer below, which applies the part of kustomize these files use:
   `resources` (files and directories), `configMapGenerator` (`files`, with
   `disableNameSuffixHash`), `patches` (strategic merge, `target`, the
   `allowNameChange`/`allowKindChange` options) and `namespace`; any other key
   is refused, so a kustomization that outgrows it fails here rather than being
   rendered wrong. Debian has no kustomize recent enough (bookworm's kubectl is
   1.20, with kustomize 2.0.3) and the registries CI can reach ship none, hence
   this renderer. Where a kustomize 4+ is installed (`kustomize`, or the one
   built into `kubectl`), each directory is rendered by it too and the two
   results must be identical, which keeps the renderer honest.
2. Schemas. Every rendered resource is validated against the Kubernetes API
   schemas bundled in kubernetes-validate (offline), strictly (an unknown field
   is an error), for the oldest and newest Kubernetes versions we claim.
   A kind without a schema is an error too.
3. Consistency that no schema sees: probes, the drain timing, the security
   context, Services and HPAs pointing at what exists, the proxy's listener
   ports matching the container's, `resolve = true` names matching a headless
   Service and port of the overlay, HPA metrics served by the adapter rules and
   those rules naming a series Switchyard exports, and every file under
   deploy/k8s used by some kustomization.

`switchyard check -c` of each overlay's switchyard.toml needs the binary: .ci/run
runs it after the build.
"""

import argparse
import copy
import difflib
import functools
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent
REPO = K8S.parent.parent

# The Kubernetes versions every manifest must be valid for: the oldest we claim
# (internalTrafficPolicy, DaemonSet maxSurge and the PodDisruptionBudget's
# unhealthyPodEvictionPolicy all exist there) and the newest the validator knows.
K8S_VERSIONS = ("1.28.0", "1.37.0")

# Strategic-merge keys of the lists these manifests patch (from the Kubernetes
# API's patchMergeKey); other lists are replaced whole, as kustomize does.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "topologySpreadConstraints": "topologyKey",
}

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")

# A Service's name in the cluster DNS, as `resolve = true` entries write it.
SVC_NAME = r"(?P<svc>[a-z0-9-]+)\.(?P<ns>[a-z0-9-]+)\.svc\.cluster\.local\.?"

# The Prometheus adapter rules, in the adapter's format (a configMapGenerator
# file) and as Helm values (not rendered: compared with it).
ADAPTER_CONFIG = "overlays/front-door/prometheus-adapter/config.yaml"
ADAPTER_VALUES = "overlays/front-door/prometheus-adapter/values.yaml"

# Files under deploy/k8s that no kustomization renders, and what checks them.
NOT_RENDERED = {
    "validate.py": "this script",
    ADAPTER_VALUES: "compared with config.yaml",
}


class Problem(Exception):
    pass


# === rendering ===


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(root, used):
    """The resources of the kustomization in `root`; records the files it reads in `used`."""
    kfile = (root / "kustomization.yaml").resolve()
    used.add(kfile)
    (k,) = load_docs(kfile)
    known = {"apiVersion", "kind", "resources", "patches", "configMapGenerator",
             "generatorOptions", "namespace"}
    if set(k) - known:
        raise Problem(f"{rel(kfile)}: keys the fallback renderer does not apply: "
                      f"{sorted(set(k) - known)}")
    out = []
    for r in k.get("resources", []):
        p = (root / r).resolve()
        if p.is_dir():
            out += render(p, used)
        else:
            used.add(p)
            out += load_docs(p)
    options = k.get("generatorOptions", {})
    for g in k.get("configMapGenerator", []):
        if set(g) - {"name", "files"} or set(options) - {"disableNameSuffixHash"}:
            raise Problem(f"{rel(kfile)}: configMapGenerator: only `name` and `files` are rendered")
        if not options.get("disableNameSuffixHash"):
            raise Problem(f"{rel(kfile)}: configMapGenerator: the name hash suffix is not rendered")
        data = {}
        for f in g["files"]:
            p = root / f
            if "=" in f or p.resolve().parent != root.resolve():
                raise Problem(f"{rel(kfile)}: configMapGenerator file {f}: only files of the directory")
            used.add(p.resolve())
            data[p.name] = p.read_text(encoding="utf-8")
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": g["name"]}, "data": data})
    for p in k.get("patches", []):
        if set(p) - {"path", "target", "options"}:
            raise Problem(f"{rel(kfile)}: patches: only `path`, `target` and `options` are rendered")
        ppath = (root / p["path"]).resolve()
        used.add(ppath)
        (patch,) = load_docs(ppath)
        target = p.get("target") or {"kind": patch["kind"], "name": patch["metadata"]["name"]}
        if set(target) - {"kind", "name"}:
            raise Problem(f"{rel(ppath)}: target: only `kind` and `name` are rendered")
        opts = p.get("options", {})
        hits = [r for r in out if r["kind"] == target["kind"]
                and r["metadata"]["name"] == target["name"]]
        if len(hits) != 1:
            raise Problem(f"{rel(ppath)}: {len(hits)} resources match {target}")
        (res,) = hits
        if patch["kind"] != res["kind"] and not opts.get("allowKindChange"):
            raise Problem(f"{rel(ppath)}: changes the kind without allowKindChange")
        if patch["metadata"]["name"] != res["metadata"]["name"] and not opts.get("allowNameChange"):
            raise Problem(f"{rel(ppath)}: changes the name without allowNameChange")
        merge(res, patch, ())
    if "namespace" in k:
        for r in out:
            r["metadata"]["namespace"] = k["namespace"]
    return out


def merge_key(path):
    if path[-1] == "ports":
        return "containerPort" if "containers" in path else "port"
    return MERGE_KEYS.get(path[-1])


def merge(dst, src, path):
    """Strategic merge of `src` into `dst`: maps merge, null deletes, lists with
    a merge key merge by it, other values replace."""
    for k, v in src.items():
        if k.startswith("$"):
            raise Problem(f"patch directive {k} at {'.'.join(path)} is not rendered")
        here = path + (k,)
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v, here)
        elif isinstance(v, list) and isinstance(dst.get(k), list) and merge_key(here):
            dst[k] = merge_list(dst[k], v, merge_key(here), here)
        else:
            dst[k] = copy.deepcopy(v)


def merge_list(dst, src, key, path):
    # kustomize's order: the patch's elements in its order (merged into the
    # matching ones), then the others in theirs.
    rest = {d[key]: d for d in dst}
    out = []
    for s in src:
        d = rest.pop(s[key], None)
        if d is None:
            out.append(copy.deepcopy(s))
        else:
            merge(d, s, path)
            out.append(d)
    return out + [d for d in dst if d[key] in rest]


def kustomize_command():
    """A kustomize 4+ to compare with, or None."""
    if shutil.which("kustomize"):
        out = run(["kustomize", "version"])
        if out and re.search(r"v([4-9]|\d\d)\.", out):
            return ["kustomize", "build"], out.strip().splitlines()[0]
    if shutil.which("kubectl"):
        out = run(["kubectl", "version", "--client"]) or ""
        m = re.search(r"Kustomize Version: (v(\d+)\S*)", out)
        if m and int(m.group(2)) >= 4:
            return ["kubectl", "kustomize"], f"kubectl's kustomize {m.group(1)}"
    return None, None


def run(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except OSError:
        return None
    return p.stdout if p.returncode == 0 else None


def ident(r):
    m = r["metadata"]
    return f"{r['kind']}/{m.get('namespace', '')}/{m['name']}"


def compare(ours, theirs, where):
    a = {ident(r): r for r in ours}
    b = {ident(r): r for r in theirs}
    if a == b:
        return
    lines = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            lines += difflib.unified_diff(
                yaml.safe_dump(b.get(name), sort_keys=True).splitlines(),
                yaml.safe_dump(a.get(name), sort_keys=True).splitlines(),
                f"kustomize: {name}", f"validate.py: {name}", lineterm="")
    raise Problem(f"{where}: the fallback renderer differs from kustomize:\n" + "\n".join(lines))


# === schemas ===


def schema_check(resources, where):
    import kubernetes_validate.utils as kv

    # Each validation reads a ~1 MB definitions file; read each once.
    if not hasattr(kv.schema_contents, "cache_info"):
        kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    errors = []
    for r in resources:
        for v in K8S_VERSIONS:
            try:
                kv.validate(r, v, strict=True)
            except kv.ValidationError as e:
                at = ".".join(str(p) for p in e.path)
                errors.append(f"{where}: {ident(r)} (Kubernetes {v}): {at}: {e.message}")
            except kv.SchemaNotFoundError as e:
                errors.append(f"{where}: {ident(r)}: {e.message}")
    return errors


# === consistency ===


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not m:
        raise Problem(f"cannot read the duration {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def pod_spec(r):
    return r["spec"]["template"]["spec"]


def pod_labels(r):
    return r["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def configs(resources):
    """{ConfigMap name: parsed switchyard.toml} of the render."""
    out = {}
    for r in resources:
        if r["kind"] == "ConfigMap" and "switchyard.toml" in r.get("data", {}):
            out[r["metadata"]["name"]] = tomllib.loads(r["data"]["switchyard.toml"])
    return out


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


@functools.cache
def image_user():
    """The (uid, gid) of deploy/Dockerfile's last USER."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (REPO / "deploy/Dockerfile").read_text(), re.M)
    if not users:
        raise Problem("deploy/Dockerfile: no numeric USER uid:gid")
    return tuple(int(i) for i in users[-1])


def check_workload(r, cms, complete, errors):
    spec = pod_spec(r)
    where = ident(r)
    psc = spec.get("securityContext", {})
    if spec.get("hostNetwork"):
        errors.append(f"{where}: hostNetwork")
    if spec.get("automountServiceAccountToken") is not False:
        errors.append(f"{where}: automountServiceAccountToken should be false")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: seccompProfile should be RuntimeDefault")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) and
                sc.get("runAsUser", psc.get("runAsUser", 0)) != 0):
            errors.append(f"{cw}: must run as a non-root uid")
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
            errors.append(f"{cw}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{cw}: readOnlyRootFilesystem must be true")
        caps = sc.get("capabilities", {})
        if caps.get("drop") != ["ALL"] or caps.get("add"):
            errors.append(f"{cw}: capabilities must drop ALL and add none")
        ids = (sc.get("runAsUser", psc.get("runAsUser")), sc.get("runAsGroup", psc.get("runAsGroup")))
        if c["image"].startswith("switchyard:") and ids != image_user():
            errors.append(f"{cw}: runs as {ids}, the image's user is {image_user()} (deploy/Dockerfile)")
        if "requests" not in c.get("resources", {}):
            errors.append(f"{cw}: no resource requests")
        names = {p["name"] for p in c.get("ports", []) if "name" in p}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in names:
                errors.append(f"{cw}: {probe} port {port!r} is not a port of this container")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pause = float(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
        if pause >= grace:
            errors.append(f"{cw}: preStop sleep {pause}s >= grace period {grace}s")
        args = c.get("args", [])
        if args[:1] != ["run"]:
            continue
        # The proxy itself (30 s: `run`'s default drain timeout).
        drain = seconds(args[args.index("--drain-timeout") + 1]) if "--drain-timeout" in args else 30
        if not pause:
            errors.append(f"{cw}: no preStop sleep before the drain")
        if grace <= pause + drain:
            errors.append(f"{cw}: grace period {grace}s is not longer than preStop "
                          f"{pause}s + drain {drain}s")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if c.get("readinessProbe", {}).get("httpGet", {}) != {"path": "/readyz", "port": "admin"}:
            errors.append(f"{cw}: readinessProbe must be GET /readyz on the admin port")
        if c.get("livenessProbe", {}).get("httpGet", {}) != {"path": "/healthz", "port": "admin"}:
            errors.append(f"{cw}: livenessProbe must be GET /healthz on the admin port")
        if not complete:
            continue
        path = args[args.index("--config") + 1]
        mount = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")]
        if len(mount) != 1 or "subPath" in mount[0]:
            errors.append(f"{cw}: {path} is not in one directory mount (a subPath sees no updates)")
            continue
        cm = volumes.get(mount[0]["name"], {}).get("configMap", {}).get("name")
        config = cms.get(cm)
        if config is None or path.rsplit("/", 1)[1] != "switchyard.toml":
            errors.append(f"{cw}: {path} is not the switchyard.toml of a ConfigMap of the overlay")
            continue
        listens = [port_of(li["listen"]) for li in config.get("listener", [])]
        if ports.get("http") not in listens:
            errors.append(f"{cw}: container port http {ports.get('http')} is not a listener of {cm}")
        admin = config.get("admin", {}).get("listen", "127.0.0.1:9901")
        if port_of(admin) != ports.get("admin") or not admin.startswith("0.0.0.0:"):
            errors.append(f"{cw}: [admin] listen {admin} must be 0.0.0.0:{ports.get('admin')} "
                          "for the kubelet's probes and Prometheus")


def check_discovery(resources, cms, errors):
    """Every `resolve = true` name is a headless Service of the render, with the port."""
    services = {(r["metadata"].get("namespace", "default"), r["metadata"]["name"]): r
                for r in resources if r["kind"] == "Service"}
    for cm, config in cms.items():
        for up, u in config.get("upstream", {}).items():
            for s in u.get("servers", []):
                if not s.get("resolve"):
                    continue
                where = f"ConfigMap {cm}: upstream.{up}"
                name = s.get("service") or s.get("addr", "")
                if "service" in s:
                    m = re.fullmatch(rf"_(?P<pname>[a-z0-9-]+)\._tcp\.{SVC_NAME}", name)
                    port = lambda p, m=m: p.get("name") == m["pname"] and p.get("protocol", "TCP") == "TCP"
                else:
                    m = re.fullmatch(rf"{SVC_NAME}:(?P<port>\d+)", name)
                    port = lambda p, m=m: p["port"] == int(m["port"])
                if not m:
                    errors.append(f"{where}: {name} is not a Service name of the cluster")
                    continue
                svc = services.get((m["ns"], m["svc"]))
                if svc is None:
                    errors.append(f"{where}: no Service {m['svc']} in namespace {m['ns']} in this overlay")
                elif svc["spec"].get("clusterIP") != "None":
                    errors.append(f"{where}: Service {m['svc']} is not headless (one virtual IP: one server)")
                elif not any(port(p) for p in svc["spec"].get("ports", [])):
                    errors.append(f"{where}: Service {m['svc']} has no port for {name}")


def adapter_rules():
    cfg_path = K8S / ADAPTER_CONFIG
    (cfg,) = load_docs(cfg_path)
    (values,) = load_docs(K8S / ADAPTER_VALUES)
    errors = []
    if values["rules"]["custom"] != cfg["rules"] or values["rules"]["external"] != cfg["externalRules"]:
        errors.append(f"deploy/k8s/{ADAPTER_VALUES}: its rules differ from config.yaml's")
    served = {}
    for kind, rules in (("Pods", cfg["rules"]), ("External", cfg["externalRules"])):
        for rule in rules:
            series = rule["name"]["matches"].strip("^$")
            served[(kind, rule["name"]["as"])] = series
    # The series must be one Switchyard exports: its name is a string in src/.
    sources = "".join(p.read_text(encoding="utf-8") for p in (REPO / "src").rglob("*.rs"))
    for series in set(served.values()):
        if f'"{series}"' not in sources:
            errors.append(f"{rel(cfg_path)}: no metric {series} in src/")
    return served, errors


def check_references(resources, cms, served, errors):
    workloads = [r for r in resources if r["kind"] in WORKLOADS]
    for r in resources:
        where = ident(r)
        if r["kind"] == "Service":
            if not any(selects(r["spec"].get("selector"), pod_labels(w)) for w in workloads):
                errors.append(f"{where}: its selector matches no pod of the overlay")
        elif r["kind"] == "PodDisruptionBudget":
            if not any(selects(r["spec"]["selector"]["matchLabels"], pod_labels(w)) for w in workloads):
                errors.append(f"{where}: its selector matches no pod of the overlay")
        elif r["kind"] == "HorizontalPodAutoscaler":
            ref = r["spec"]["scaleTargetRef"]
            target = [w for w in workloads if w["kind"] == ref["kind"]
                      and w["metadata"]["name"] == ref["name"]]
            if not target:
                errors.append(f"{where}: scales {ref['kind']}/{ref['name']}, not in the overlay")
            elif "replicas" in target[0]["spec"]:
                errors.append(f"{where}: {ref['name']} sets replicas, which every apply would put back")
            for m in r["spec"].get("metrics", []):
                if m["type"] in ("Pods", "External"):
                    body = m[m["type"].lower()]["metric"]
                    if (m["type"], body["name"]) not in served:
                        errors.append(f"{where}: no adapter rule serves the {m['type']} metric {body['name']}")
                    upstream = body.get("selector", {}).get("matchLabels", {}).get("upstream")
                    if upstream and not any(upstream in c.get("upstream", {}) for c in cms.values()):
                        errors.append(f"{where}: no switchyard.toml of the overlay has upstream {upstream}")


# === main ===


def rel(p):
    try:
        return str(Path(p).resolve().relative_to(REPO))
    except ValueError:
        return str(p)


def main():
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    start = time.monotonic()
    kustomize, kversion = kustomize_command()
    print("deploy/k8s: rendering with validate.py" +
          (f", compared with {kversion}" if kustomize else " (no kustomize 4+ here to compare with)"))
    served, errors = adapter_rules()
    used = set()
    count = 0
    render_failed = False
    for kfile in sorted(K8S.rglob("kustomization.yaml")):
        root = kfile.parent
        where = rel(root)
        try:
            resources = render(root, used)
            if kustomize:
                out = subprocess.run(kustomize + [str(root)], capture_output=True, text=True)
                if out.returncode != 0:
                    raise Problem(f"{where}: kustomize failed: {out.stderr.strip()}")
                compare(resources, [d for d in yaml.safe_load_all(out.stdout) if d], where)
        except Problem as e:
            errors.append(str(e))
            render_failed = True
            continue
        found = schema_check(resources, where)
        cms = configs(resources)
        # An overlay is what gets applied; base/ and bots/ are parts of one.
        complete = root.parent.name == "overlays"
        for r in resources:
            if r["kind"] in WORKLOADS:
                check_workload(r, cms, complete, found)
        if complete:
            check_discovery(resources, cms, found)
            check_references(resources, cms, served, found)
        errors += found
        count += len(resources)
        kinds = ", ".join(sorted(r["kind"] for r in resources))
        print(f"  {where}: {'ok' if not found else 'FAILED'} ({kinds})")
    # (After a failed render the files it did not reach would all be listed.)
    for p in sorted(K8S.rglob("*")) if not render_failed else ():
        if p.is_file() and p.resolve() not in used and str(p.relative_to(K8S)) not in NOT_RENDERED \
                and "__pycache__" not in p.parts:
            errors.append(f"{rel(p)}: used by no kustomization, so never validated")
    for e in errors:
        print(f"ERROR {e}")
    print(f"deploy/k8s: {count} resources rendered, schemas of Kubernetes "
          f"{' and '.join(K8S_VERSIONS)} (strict), {len(errors)} problems, "
          f"{time.monotonic() - start:.1f}s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
