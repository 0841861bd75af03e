#!/usr/bin/env python3
"""Renders a kustomization the way `kustomize build` does, for the subset of
kustomize that spar's manifests use, so they can be rendered and checked on
machines without kubectl or kustomize (and in CTest).

    python3 deploy/k8s/render.py deploy/k8s/overlays/cpu-small  > spar.yaml
    python3 deploy/k8s/render.py --json deploy/k8s/overlays/gpu-8b

Supported kustomization.yaml fields (anything else is an error, so a field
that real kustomize would apply is never silently skipped):
  apiVersion, kind, resources (files and kustomization folders), namespace,
  patches (path: or patch:, optional target: {group, version, kind, name};
  strategic-merge patches only), replicas, images, configMapGenerator
  (files, literals; behavior create | replace | merge), generatorOptions
  (disableNameSuffixHash, labels, annotations).

Strategic merge follows the Kubernetes rules for the fields used here: maps
merge recursively, `null` deletes a key, `$patch: replace` replaces a map,
lists with a merge key (containers/initContainers by name, volumes by name,
env by name, volumeMounts by mountPath, container ports by containerPort,
Service ports by port, imagePullSecrets by name) merge element-wise and
honour `$patch: delete`; every other list is replaced. A patch document
with `$patch: delete` deletes the whole object.

Generated ConfigMaps get a content-hash suffix (as kustomize does, though
the 10 characters are not byte-identical to kustomize's) and references to
them from pod templates (volumes, projected volumes, envFrom, env
configMapKeyRef) are renamed to match.
"""
import argparse
import copy
import hashlib
import json
import os
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.stderr.write("render.py: needs PyYAML (Debian: apt-get install python3-yaml)\n")
    sys.exit(2)


class RenderError(Exception):
    pass


KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "resources", "namespace", "patches", "replicas",
    "images", "configMapGenerator", "generatorOptions",
}

# Field name -> merge key, for lists that strategic merge merges element-wise.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
}

# The order `kustomize build` prints kinds in (its legacy ordering).
KIND_ORDER = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
    "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
    "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service",
    "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
CLUSTER_SCOPED = {"Namespace", "StorageClass", "CustomResourceDefinition", "ClusterRole",
                  "ClusterRoleBinding", "PersistentVolume", "PriorityClass"}


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        try:
            return [d for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            raise RenderError(f"{path}: not valid YAML: {e}")


def _merge_key_for(field, items, parent_kind):
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    if field == "ports" and items and isinstance(items[0], dict):
        if parent_kind == "container" or "containerPort" in items[0]:
            return "containerPort"
        if "port" in items[0]:
            return "port"
    return None


def strategic_merge(base, patch, field=None, parent_kind=None):
    """Returns base with patch applied (neither argument is modified)."""
    if isinstance(patch, dict) and isinstance(base, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if key == "$patch":
                continue
            if value is None:
                out.pop(key, None)
            elif key in out:
                kind = "container" if key in ("containers", "initContainers") else parent_kind
                if key == "ports" and field in ("containers", "initContainers"):
                    kind = "container"
                out[key] = strategic_merge(out[key], value, key, kind)
            else:
                out[key] = _strip_directives(value)
        return out
    if isinstance(patch, list) and isinstance(base, list):
        key = _merge_key_for(field, patch or base, parent_kind)
        if key is None:
            return _strip_directives(patch)
        out = copy.deepcopy(base)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(f"patch list '{field}': every element needs its merge key '{key}'")
            idx = next((i for i, b in enumerate(out) if isinstance(b, dict) and b.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    del out[idx]
                continue
            if idx is None:
                out.append(_strip_directives(item))
            else:
                out[idx] = strategic_merge(out[idx], item, field, parent_kind)
        return out
    return _strip_directives(patch)


def _strip_directives(value):
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if k != "$patch" and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return copy.deepcopy(value)


def object_id(obj):
    md = obj.get("metadata") or {}
    return (obj.get("apiVersion", ""), obj.get("kind", ""), md.get("name", ""))


def _group_version(api_version):
    return tuple(api_version.split("/", 1)) if "/" in api_version else ("", api_version)


def _matches_target(obj, target):
    group, version = _group_version(obj.get("apiVersion", ""))
    for field, actual in (("kind", obj.get("kind")), ("name", (obj.get("metadata") or {}).get("name")),
                          ("group", group), ("version", version)):
        if field in target and target[field] != actual:
            return False
    for field in target:
        if field not in ("kind", "name", "group", "version"):
            raise RenderError(f"patch target field '{field}' is not supported by render.py")
    return True


def _pod_specs(obj):
    spec = obj.get("spec") or {}
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield (spec.get("template") or {}).get("spec") or {}
    elif obj.get("kind") == "CronJob":
        yield (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    elif obj.get("kind") == "Pod":
        yield spec


def _containers(pod_spec):
    for field in ("initContainers", "containers"):
        for c in pod_spec.get(field) or []:
            yield c


def _config_hash(cm):
    content = json.dumps({"kind": "ConfigMap", "name": cm["metadata"]["name"],
                          "data": cm.get("data") or {}}, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    # kustomize avoids characters that could spell words: the same mapping.
    return digest.translate(str.maketrans({"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}))


class Kustomization:
    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        path = None
        for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
            if os.path.isfile(os.path.join(self.dir, name)):
                path = os.path.join(self.dir, name)
                break
        if path is None:
            raise RenderError(f"{directory}: no kustomization.yaml")
        self.path = path
        docs = load_yaml_docs(path)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise RenderError(f"{path}: must hold one mapping")
        self.k = docs[0]
        unknown = set(self.k) - KUSTOMIZATION_KEYS
        if unknown:
            raise RenderError(f"{path}: fields not supported by render.py: {', '.join(sorted(unknown))}")
        if self.k.get("kind", "Kustomization") != "Kustomization":
            raise RenderError(f"{path}: kind must be Kustomization")

    def _file(self, rel):
        p = os.path.normpath(os.path.join(self.dir, rel))
        # kustomize's default load restrictor: files must be under the root.
        if not (p == self.dir or p.startswith(self.dir + os.sep)):
            raise RenderError(f"{self.path}: '{rel}' is outside the kustomization folder")
        if not os.path.exists(p):
            raise RenderError(f"{self.path}: '{rel}' does not exist")
        return p

    def build(self):
        objects = []  # list of (object, generated_configmap_base_name or None)
        for rel in self.k.get("resources") or []:
            p = os.path.normpath(os.path.join(self.dir, rel))
            if os.path.isdir(p):
                objects.extend(Kustomization(p).build_raw())
            elif os.path.isfile(p):
                for doc in load_yaml_docs(p):
                    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                        raise RenderError(f"{p}: every document needs apiVersion and kind")
                    objects.append([doc, None])
            else:
                raise RenderError(f"{self.path}: resource '{rel}' does not exist")
        self._check_unique(objects)
        self._generate_configmaps(objects)
        self._apply_patches(objects)
        self._apply_replicas(objects)
        self._apply_images(objects)
        if "namespace" in self.k:
            for obj, _ in objects:
                if obj["kind"] not in CLUSTER_SCOPED:
                    obj.setdefault("metadata", {})["namespace"] = self.k["namespace"]
        return objects

    def build_raw(self):
        return self.build()

    def _check_unique(self, objects):
        seen = set()
        for obj, _ in objects:
            oid = object_id(obj)
            if oid in seen:
                raise RenderError(f"{self.path}: {oid[1]} {oid[2]} defined twice")
            seen.add(oid)

    def _generate_configmaps(self, objects):
        opts = self.k.get("generatorOptions") or {}
        for gen in self.k.get("configMapGenerator") or []:
            name = gen.get("name")
            if not name:
                raise RenderError(f"{self.path}: configMapGenerator entry without a name")
            unknown = set(gen) - {"name", "files", "literals", "behavior", "options"}
            if unknown:
                raise RenderError(f"{self.path}: configMapGenerator {name}: unsupported {sorted(unknown)}")
            data = {}
            for entry in gen.get("files") or []:
                key, _, rel = entry.partition("=") if "=" in entry else (os.path.basename(entry), "", entry)
                with open(self._file(rel), encoding="utf-8") as f:
                    data[key] = f.read()
            for entry in gen.get("literals") or []:
                key, sep, value = entry.partition("=")
                if not sep:
                    raise RenderError(f"{self.path}: literal '{entry}' is not KEY=VALUE")
                data[key] = value
            behavior = gen.get("behavior", "create")
            existing = next((o for o in objects if o[0]["kind"] == "ConfigMap" and o[1] == name), None)
            if behavior == "create":
                if existing:
                    raise RenderError(f"{self.path}: ConfigMap {name} already generated; use behavior: replace or merge")
                meta = {"name": name}
                gopts = dict(opts)
                gopts.update(gen.get("options") or {})
                if gopts.get("labels"):
                    meta["labels"] = dict(gopts["labels"])
                if gopts.get("annotations"):
                    meta["annotations"] = dict(gopts["annotations"])
                cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
                cm["_hash"] = not gopts.get("disableNameSuffixHash", False)
                objects.append([cm, name])
            elif behavior in ("replace", "merge"):
                if not existing:
                    raise RenderError(f"{self.path}: ConfigMap {name} to {behavior} was not generated by a base")
                if behavior == "replace":
                    existing[0]["data"] = data
                else:
                    existing[0].setdefault("data", {}).update(data)
            else:
                raise RenderError(f"{self.path}: configMapGenerator {name}: behavior '{behavior}'")

    def _apply_patches(self, objects):
        for entry in self.k.get("patches") or []:
            unknown = set(entry) - {"path", "patch", "target", "options"}
            if unknown:
                raise RenderError(f"{self.path}: patch fields not supported: {sorted(unknown)}")
            if "path" in entry:
                docs = load_yaml_docs(self._file(entry["path"]))
                where = entry["path"]
            else:
                docs = [d for d in yaml.safe_load_all(entry.get("patch", "")) if d is not None]
                where = "inline patch"
            if any(isinstance(d, list) for d in docs):
                raise RenderError(f"{self.path}: {where}: JSON6902 patches are not supported by render.py")
            for doc in docs:
                target = entry.get("target")
                if target is None:
                    target = {"kind": doc.get("kind"), "name": (doc.get("metadata") or {}).get("name")}
                hits = [o for o in objects if _matches_target(o[0], target) or
                        (o[1] is not None and target.get("kind") == "ConfigMap" and target.get("name") == o[1])]
                if not hits:
                    raise RenderError(f"{self.path}: {where}: no object matches {target}")
                for o in hits:
                    if doc.get("$patch") == "delete":
                        objects.remove(o)
                        continue
                    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
                    md = dict(body.get("metadata") or {})
                    md.pop("name", None)
                    if md:
                        body["metadata"] = md
                    else:
                        body.pop("metadata", None)
                    o[0] = strategic_merge(o[0], body)

    def _apply_replicas(self, objects):
        for r in self.k.get("replicas") or []:
            hits = [o for o, _ in objects if (o.get("metadata") or {}).get("name") == r.get("name")
                    and o["kind"] in ("Deployment", "StatefulSet", "ReplicaSet")]
            if not hits:
                raise RenderError(f"{self.path}: replicas: no workload named {r.get('name')}")
            if not isinstance(r.get("count"), int) or r["count"] < 0:
                raise RenderError(f"{self.path}: replicas {r.get('name')}: count must be an integer >= 0")
            for o in hits:
                o["spec"]["replicas"] = r["count"]

    def _apply_images(self, objects):
        for img in self.k.get("images") or []:
            name = img.get("name")
            for obj, _ in objects:
                for pod in _pod_specs(obj):
                    for c in _containers(pod):
                        image = c.get("image", "")
                        base, digest = (image.split("@", 1) + [None])[:2]
                        repo, tag = base, None
                        if ":" in base.rsplit("/", 1)[-1]:
                            repo, tag = base.rsplit(":", 1)
                        if repo != name:
                            continue
                        repo = img.get("newName", repo)
                        if "digest" in img:
                            c["image"] = f"{repo}@{img['digest']}"
                        elif "newTag" in img:
                            c["image"] = f"{repo}:{img['newTag']}"
                        else:
                            c["image"] = repo + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _rename_configmap_refs(obj, renames):
    for pod in _pod_specs(obj):
        for v in pod.get("volumes") or []:
            if "configMap" in v and v["configMap"].get("name") in renames:
                v["configMap"]["name"] = renames[v["configMap"]["name"]]
            for src in ((v.get("projected") or {}).get("sources") or []):
                if "configMap" in src and src["configMap"].get("name") in renames:
                    src["configMap"]["name"] = renames[src["configMap"]["name"]]
        for c in _containers(pod):
            for ef in c.get("envFrom") or []:
                ref = ef.get("configMapRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref.get("name") in renames:
                    ref["name"] = renames[ref["name"]]


def render(directory):
    """Returns the rendered objects of the kustomization in `directory`."""
    objects = Kustomization(directory).build()
    renames = {}
    for obj, generated in objects:
        if generated is not None and obj.pop("_hash", False):
            obj["metadata"]["name"] = f"{generated}-{_config_hash(obj)}"
            renames[generated] = obj["metadata"]["name"]
        obj.pop("_hash", None)
    out = [obj for obj, _ in objects]
    for obj in out:
        _rename_configmap_refs(obj, renames)

    def order(obj):
        kind = obj["kind"]
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        return (rank, kind, obj["metadata"].get("name", ""))
    return sorted(out, key=order)


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper, value):
    style = "|" if "\n" in value else None  # config files stay readable
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(objects):
    return "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
                         for o in objects)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Render a spar kustomization (kustomize subset) to YAML.")
    ap.add_argument("dir", help="kustomization folder, e.g. deploy/k8s/overlays/cpu-small")
    ap.add_argument("--json", action="store_true", help="print a JSON list instead of multi-document YAML")
    args = ap.parse_args(argv)
    try:
        objects = render(args.dir)
    except (RenderError, OSError) as e:
        sys.stderr.write(f"render.py: error: {e}\n")
        return 1
    sys.stdout.write(json.dumps(objects, indent=1) + "\n" if args.json else to_yaml(objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
