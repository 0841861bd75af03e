#!/usr/bin/env python3
"""Offline checks of deploy/k8s: renders the base and every overlay with
deploy/k8s/render.py (the kustomize subset it implements) and checks:

 1. every object against the Kubernetes OpenAPI schemas (the kubernetes-models
    npm package in .cache/k8s-schemas, installed by scripts/setup.sh; that
    part skips with a notice if it is missing);
 2. what the schemas cannot see: names, selectors matching pod labels, every
    Service selecting some workload and targeting ports the pods declare,
    probes naming declared ports, quantities, GPU requests = limits, volume
    mounts and ConfigMap/PVC references resolving, StatefulSets naming a
    headless Service;
 3. the spar config in the ConfigMap: it parses, is remote mode, and every
    address in it points at a Service of this rendering (generators: one
    entry per generator pod, learner.world_size = learner replicas, the
    rendezvous on rank 0), and the listen ports are container ports;
 4. `spar config check` accepts it, when the spar binary is given.

usage: test_k8s.py [PATH_TO_SPAR]
"""
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "deploy", "k8s"))
import render  # noqa: E402
import yaml  # noqa: E402

KINDS = {("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"),
         ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet")}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def pod_template(obj):
    return obj["spec"]["template"]


def workloads(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def quantity_value(q):
    q = str(q)
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
    for s in sorted(suffixes, key=len, reverse=True):
        if q.endswith(s):
            return float(q[: -len(s)]) * suffixes[s]
    return float(q)


def check_container(where, c, volume_names):
    if not c.get("image"):
        fail(where, "no image")
    names = set()
    numbers = set()
    for p in c.get("ports") or []:
        if not isinstance(p.get("containerPort"), int) or not 0 < p["containerPort"] < 65536:
            fail(where, f"bad containerPort {p.get('containerPort')}")
        numbers.add(p.get("containerPort"))
        if "name" in p:
            if len(p["name"]) > 15 or not DNS1123.match(p["name"]):
                fail(where, f"port name '{p['name']}' is not an IANA service name (<= 15 chars)")
            if p["name"] in names:
                fail(where, f"port name '{p['name']}' twice")
            names.add(p["name"])
    for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(probe_name)
        if probe is None:
            continue
        handlers = [h for h in PROBE_HANDLERS if h in probe]
        if len(handlers) != 1:
            fail(where, f"{probe_name} needs exactly one of {PROBE_HANDLERS}, has {handlers}")
            continue
        h = probe[handlers[0]]
        if handlers[0] in ("httpGet", "tcpSocket", "grpc"):
            port = h.get("port")
            if isinstance(port, str) and port not in names:
                fail(where, f"{probe_name} port '{port}' is not a named container port")
            if isinstance(port, int) and port not in numbers:
                fail(where, f"{probe_name} port {port} is not a container port")
        if handlers[0] == "exec" and not h.get("command"):
            fail(where, f"{probe_name} exec without a command")
    res = c.get("resources") or {}
    for section in ("requests", "limits"):
        for k, v in (res.get(section) or {}).items():
            if not QUANTITY.match(str(v)):
                fail(where, f"resources.{section}.{k}: '{v}' is not a quantity")
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    for k in set(req) & set(lim):
        if QUANTITY.match(str(req[k])) and QUANTITY.match(str(lim[k])) and quantity_value(req[k]) > quantity_value(lim[k]):
            fail(where, f"resources: request {k}={req[k]} above its limit {lim[k]}")
    for k in set(req) | set(lim):
        if "/" in k and not k.startswith("kubernetes.io/") and str(req.get(k)) != str(lim.get(k)):
            fail(where, f"extended resource {k}: request and limit must be equal (got {req.get(k)} / {lim.get(k)})")
    for m in c.get("volumeMounts") or []:
        if m.get("name") not in volume_names:
            fail(where, f"volumeMount '{m.get('name')}' names no volume")
        if not str(m.get("mountPath", "")).startswith("/"):
            fail(where, f"volumeMount '{m.get('name')}' path must be absolute")
    return names, numbers


def check_objects(label, objs):
    by_kind = {}
    for o in objs:
        where = f"{label}: {o.get('kind')} {o.get('metadata', {}).get('name')}"
        if (o.get("apiVersion"), o.get("kind")) not in KINDS:
            fail(where, f"unexpected apiVersion/kind {o.get('apiVersion')}/{o.get('kind')}")
        name = (o.get("metadata") or {}).get("name", "")
        if not DNS1123.match(name) or len(name) > 63:
            fail(where, "metadata.name is not a DNS-1123 label")
        by_kind.setdefault(o["kind"], {})[name] = o
    services = by_kind.get("Service", {})
    configmaps = by_kind.get("ConfigMap", {})
    pvcs = by_kind.get("PersistentVolumeClaim", {})
    pod_ports = {}  # workload name -> (names, numbers)
    for w in workloads(objs):
        where = f"{label}: {w['kind']} {w['metadata']['name']}"
        spec = w["spec"]
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = (pod_template(w).get("metadata") or {}).get("labels") or {}
        if not sel:
            fail(where, "no selector.matchLabels")
        if any(labels.get(k) != v for k, v in sel.items()):
            fail(where, f"selector {sel} does not match the template labels {labels}")
        if not isinstance(spec.get("replicas", 1), int) or spec.get("replicas", 1) < 0:
            fail(where, "replicas must be an integer >= 0")
        pod = pod_template(w)["spec"]
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        claim_templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
        volume_names = set(vols) | claim_templates
        for v in vols.values():
            sources = [k for k in v if k != "name"]
            if len(sources) != 1:
                fail(where, f"volume '{v['name']}' needs exactly one source, has {sources}")
            if "configMap" in v and v["configMap"].get("name") not in configmaps:
                fail(where, f"volume '{v['name']}' names ConfigMap {v['configMap'].get('name')}, not rendered")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("claimName") not in pvcs:
                fail(where, f"volume '{v['name']}' names PVC {v['persistentVolumeClaim'].get('claimName')}, not rendered")
        names, numbers = set(), set()
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            n, p = check_container(f"{where} container {c.get('name')}", c, volume_names)
            if c in (pod.get("containers") or []):
                names |= n
                numbers |= p
        if not pod.get("containers"):
            fail(where, "no containers")
        pod_ports[w["metadata"]["name"]] = (names, numbers)
        ann = (pod_template(w).get("metadata") or {}).get("annotations") or {}
        if ann.get("prometheus.io/scrape") == "true":
            if not str(ann.get("prometheus.io/port", "")).isdigit() or int(ann["prometheus.io/port"]) not in numbers:
                fail(where, f"prometheus.io/port {ann.get('prometheus.io/port')} is not a container port")
        if w["kind"] == "StatefulSet":
            svc = services.get(spec.get("serviceName"))
            if svc is None:
                fail(where, f"serviceName {spec.get('serviceName')} is not a rendered Service")
            elif svc["spec"].get("clusterIP") != "None":
                fail(where, f"serviceName {spec.get('serviceName')} must be a headless Service")
    for name, s in services.items():
        where = f"{label}: Service {name}"
        sel = s["spec"].get("selector") or {}
        targets = []
        for w in workloads(objs):
            labels = (pod_template(w).get("metadata") or {}).get("labels") or {}
            pod_sel = {k: v for k, v in sel.items() if k != "statefulset.kubernetes.io/pod-name"}
            if sel and all(labels.get(k) == v for k, v in pod_sel.items()):
                pinned = sel.get("statefulset.kubernetes.io/pod-name")
                if pinned is not None:
                    m = re.match(rf"^{re.escape(w['metadata']['name'])}-(\d+)$", pinned)
                    if w["kind"] != "StatefulSet" or not m or int(m.group(1)) >= w["spec"].get("replicas", 1):
                        continue
                targets.append(w)
        if not targets:
            fail(where, f"selector {sel} selects no workload")
        for p in s["spec"].get("ports") or []:
            tp = p.get("targetPort", p.get("port"))
            for w in targets:
                names, numbers = pod_ports[w["metadata"]["name"]]
                if (isinstance(tp, str) and tp not in names) or (isinstance(tp, int) and tp not in numbers):
                    fail(where, f"targetPort {tp} is not a port of {w['metadata']['name']}")
    return by_kind


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_spar_config(label, by_kind, objs):
    cms = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith("spar-config")]
    if len(cms) != 1:
        fail(label, f"expected one spar-config ConfigMap, found {len(cms)}")
        return None
    text = (cms[0].get("data") or {}).get("spar.yaml")
    if text is None:
        fail(label, "spar-config has no spar.yaml key")
        return None
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(label, f"spar.yaml does not parse: {e}")
        return None
    where = f"{label}: spar.yaml"
    services = by_kind.get("Service", {})
    sts = by_kind.get("StatefulSet", {})
    deps = by_kind.get("Deployment", {})
    # Every pod mounts the config at /etc/spar/spar.yaml.
    for w in workloads(objs):
        pod = pod_template(w)["spec"]
        cfg_vols = {v["name"] for v in pod.get("volumes") or [] if v.get("configMap", {}).get("name") == cms[0]["metadata"]["name"]}
        for c in pod.get("containers") or []:
            if not any(m["name"] in cfg_vols and m["mountPath"] == "/etc/spar" for m in c.get("volumeMounts") or []):
                fail(f"{label}: {w['metadata']['name']}", "container does not mount the spar config at /etc/spar")
            if "/etc/spar/spar.yaml" not in " ".join(map(str, c.get("command", []) + c.get("args", []))):
                fail(f"{label}: {w['metadata']['name']}", "command does not pass --config /etc/spar/spar.yaml")
    if (cfg.get("run") or {}).get("launch") != "remote":
        fail(where, "run.launch must be remote on Kubernetes")

    def service_for(address, what, workload):
        host, port = address.rsplit(":", 1)
        port = int(port)
        parts = host.split(".")
        if len(parts) >= 2 and parts[1] in services and services[parts[1]]["spec"].get("clusterIP") == "None":
            svc = services[parts[1]]  # <pod>.<headless service>
            pod = parts[0]
            m = re.match(r"^(.*)-(\d+)$", pod)
            owner = sts.get(m.group(1)) if m else None
            if owner is None or owner["spec"].get("serviceName") != parts[1]:
                fail(where, f"{what} {address}: {pod} is not a pod of a StatefulSet governed by {parts[1]}")
            elif int(m.group(2)) >= owner["spec"].get("replicas", 1):
                fail(where, f"{what} {address}: {owner['metadata']['name']} has only {owner['spec'].get('replicas', 1)} replicas")
            elif owner["metadata"]["name"] != workload:
                fail(where, f"{what} {address}: points at {owner['metadata']['name']}, not {workload}")
        elif parts[0] in services:
            svc = services[parts[0]]
            sel = svc["spec"].get("selector") or {}
            w = sts.get(workload) or deps.get(workload)
            labels = (pod_template(w).get("metadata") or {}).get("labels", {}) if w else {}
            if not w or any(labels.get(k) != v for k, v in sel.items() if k != "statefulset.kubernetes.io/pod-name"):
                fail(where, f"{what} {address}: Service {parts[0]} does not select {workload}")
        else:
            fail(where, f"{what} {address}: no Service named {parts[0]} (or headless {parts[1:2]}) in the rendering")
            return
        if port not in [p["port"] for p in svc["spec"].get("ports") or []]:
            fail(where, f"{what} {address}: Service {svc['metadata']['name']} has no port {port}")

    gens = cfg.get("generators") or []
    gen_sts = sts.get("spar-generator")
    if gen_sts is None:
        fail(where, "no spar-generator StatefulSet")
    elif len(gens) != gen_sts["spec"].get("replicas", 1):
        fail(where, f"generators: {len(gens)} entries but spar-generator has {gen_sts['spec'].get('replicas', 1)} replicas")
    seen = set()
    for i, g in enumerate(gens):
        a = (g or {}).get("address")
        if not a:
            fail(where, f"generators[{i}].address missing")
            continue
        if a in seen:
            fail(where, f"generators[{i}].address {a} listed twice")
        seen.add(a)
        service_for(a, f"generators[{i}].address", "spar-generator")
    scorer = cfg.get("scorer") or {}
    if scorer.get("address") and deps.get("spar-scorer", {}).get("spec", {}).get("replicas", 1) > 0:
        service_for(scorer["address"], "scorer.address", "spar-scorer")
    learner = cfg.get("learner") or {}
    service_for(learner.get("address", ""), "learner.address", "spar-learner")
    lsts = sts.get("spar-learner")
    if lsts and learner.get("world_size", 1) != lsts["spec"].get("replicas", 1):
        fail(where, f"learner.world_size {learner.get('world_size', 1)} != spar-learner replicas {lsts['spec'].get('replicas', 1)}")
    if learner.get("world_size", 1) > 1 or learner.get("rendezvous"):
        rv = learner.get("rendezvous", "")
        if not rv.split(".")[0].endswith("-0"):
            fail(where, f"learner.rendezvous {rv} must be rank 0 (it hosts the TCPStore)")
        service_for(rv, "learner.rendezvous", "spar-learner")
    # Listen ports are container ports of the pods that listen on them.
    for section, workload, keys in (("generator", "spar-generator", ("listen", "http_listen", "metrics_listen")),
                                    ("scorer", "spar-scorer", ("listen",)),
                                    ("learner", "spar-learner", ("listen",))):
        w = sts.get(workload) or deps.get(workload)
        if not w:
            continue
        ports = {p["containerPort"] for c in pod_template(w)["spec"]["containers"] for p in c.get("ports") or []}
        for k in keys:
            a = (cfg.get(section) or {}).get(k)
            if a:
                if not a.startswith("0.0.0.0:") and not a.startswith("[::]:"):
                    fail(where, f"{section}.{k} {a}: must listen on all interfaces in a pod")
                if port_of(a) not in ports:
                    fail(where, f"{section}.{k} {a}: port is not a container port of {workload}")
    # The run folder lives on the orchestrator's PersistentVolume.
    orch = sts.get("spar-orchestrator")
    run_dir = (cfg.get("run") or {}).get("dir", "")
    if orch:
        claims = {t["metadata"]["name"] for t in orch["spec"].get("volumeClaimTemplates") or []}
        mounts = [m for c in pod_template(orch)["spec"]["containers"] for m in c.get("volumeMounts") or []
                  if m["name"] in claims]
        if not any(run_dir == m["mountPath"] or run_dir.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts):
            fail(where, f"run.dir {run_dir} is not on a PersistentVolume of spar-orchestrator")
    else:
        fail(where, "no spar-orchestrator StatefulSet")
    return text


def schema_validate(label, objs):
    node_modules = os.path.join(ROOT, ".cache", "k8s-schemas", "node_modules")
    if not os.path.isdir(os.path.join(node_modules, "kubernetes-models")):
        print(f"SKIP {label}: Kubernetes schemas not installed ({node_modules}/kubernetes-models; scripts/setup.sh)")
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(objs, f)
    try:
        env = dict(os.environ, NODE_PATH=node_modules)
        r = subprocess.run(["node", os.path.join(ROOT, "tests", "deploy", "k8s_schema_validate.js"), f.name],
                           capture_output=True, text=True, env=env, timeout=120)
    finally:
        os.unlink(f.name)
    for line in r.stdout.splitlines():
        if line.startswith("INVALID"):
            fail(label, "schema: " + line)
    if r.returncode not in (0, 1):
        fail(label, f"schema validator failed ({r.returncode}): {r.stdout}{r.stderr}")
    return True


def self_test_render():
    """The strategic-merge rules render.py relies on."""
    base = {"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 1}]},
                                    {"name": "b", "image": "y"}],
                     "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "k"}]}}
    patch = {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 2}]}, {"name": "b", "$patch": "delete"}],
                      "volumes": [{"name": "v", "emptyDir": None, "persistentVolumeClaim": {"claimName": "c"}}],
                      "tolerations": [{"key": "z"}]}}
    out = render.strategic_merge(base, patch)
    want = {"spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 1}, {"containerPort": 2}]}],
                     "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}], "tolerations": [{"key": "z"}]}}
    if out != want:
        fail("render.strategic_merge", f"got {out}, want {want}")


def main():
    spar = sys.argv[1] if len(sys.argv) > 1 else None
    self_test_render()
    k8s = os.path.join(ROOT, "deploy", "k8s")
    targets = [os.path.join(k8s, "base")] + sorted(
        os.path.join(k8s, "overlays", d) for d in os.listdir(os.path.join(k8s, "overlays")))
    schemas_checked = False
    for t in targets:
        label = os.path.relpath(t, ROOT)
        try:
            objs = render.render(t)
        except render.RenderError as e:
            fail(label, f"render: {e}")
            continue
        # Round trip through the YAML that kubectl would read.
        objs = list(yaml.safe_load_all(render.to_yaml(objs)))
        by_kind = check_objects(label, objs)
        text = check_spar_config(label, by_kind, objs)
        schemas_checked |= schema_validate(label, objs)
        if text is not None and spar:
            if not os.path.exists(spar):
                print(f"SKIP {label}: spar binary {spar} not built; `spar config check` not run")
            else:
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                    f.write(text)
                r = subprocess.run([spar, "config", "check", "--config", f.name], capture_output=True, text=True)
                os.unlink(f.name)
                if r.returncode != 0:
                    fail(label, f"spar config check rejects spar.yaml: {r.stdout}{r.stderr}")
        print(f"checked {label}: {len(objs)} objects")
    if errors:
        for e in errors:
            print("FAIL", e)
        return 1
    print("deploy/k8s: all renderings valid" + ("" if schemas_checked else " (structural checks only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
