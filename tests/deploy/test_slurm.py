#!/usr/bin/env python3
"""deploy/slurm/spar-slurm: the node-list parser, and the --dry-run plan of a
3-node allocation (node[1-3]) with the example config: placement, srun
commands, and the per-job config (remote mode, addresses on the chosen
nodes; `spar config check` accepts it when the spar binary is given).

usage: test_slurm.py [PATH_TO_SPAR]
"""
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import yaml

sys.dont_write_bytecode = True

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAUNCHER = os.path.join(ROOT, "deploy", "slurm", "spar-slurm")
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


def load_launcher():
    loader = importlib.machinery.SourceFileLoader("spar_slurm", LAUNCHER)
    spec = importlib.util.spec_from_loader("spar_slurm", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def example_config():
    """examples/local.yaml with its policy folder pointed somewhere absent, so
    the plan does not depend on whether the main job has already run here."""
    with open(os.path.join(ROOT, "examples", "local.yaml")) as f:
        cfg = yaml.safe_load(f)
    cfg["policy"]["model"] = os.path.join(tempfile.gettempdir(), "spar-slurm-test-absent", "policy-init")
    path = os.path.join(tempfile.gettempdir(), "spar-slurm-test-%d.yaml" % os.getpid())
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def dry_run(extra, nodelist="node[1-3]"):
    env = dict(os.environ, SLURM_JOB_NODELIST=nodelist, SLURM_JOB_ID="4242",
               PATH="/usr/bin:/bin")  # no scontrol: the launcher's own parser
    r = subprocess.run([sys.executable, LAUNCHER, "--config", example_config(),
                        "--dry-run", "--json", "--spar", "/opt/spar/bin/spar", "--job-dir", "/shared/job"] + extra,
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    if r.returncode != 0:
        errors.append(f"dry run {extra} failed ({r.returncode}): {r.stderr}")
        return None
    return json.loads(r.stdout)


def main():
    spar = sys.argv[1] if len(sys.argv) > 1 else None
    mod = load_launcher()
    cases = {
        "node[1-3]": ["node1", "node2", "node3"],
        "node[01-03,07],gpu5": ["node01", "node02", "node03", "node07", "gpu5"],
        "a1,b[9-11]": ["a1", "b9", "b10", "b11"],
        "rack[1-2]-n[1-2]": ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"],
        "single": ["single"],
    }
    for text, want in cases.items():
        got = mod.expand_nodelist(text)
        check(got == want, f"expand_nodelist({text!r}) = {got}, want {want}")
    for bad in ("node[1-3", "node[3-1]", "node[a-b]"):
        try:
            mod.expand_nodelist(bad)
            errors.append(f"expand_nodelist({bad!r}) should fail")
        except ValueError:
            pass

    plan = dry_run([])
    if plan:
        check(plan["nodes"] == ["node1", "node2", "node3"], f"nodes {plan['nodes']}")
        check(plan["placement"] == {"node1": ["scorer", "learner-0", "orchestrator"],
                                    "node2": ["generator-0"], "node3": ["generator-1"]},
              f"placement {plan['placement']}")
        for s in plan["services"]:
            srun = s["srun"]
            check(srun[0] == "srun" and f"--nodelist={s['node']}" in srun and "--overlap" in srun,
                  f"{s['name']}: srun line {srun}")
            check(srun[srun.index("/opt/spar/bin/spar"):][:4][2:] == ["--config", "/shared/job/spar.yaml"],
                  f"{s['name']}: not started with the job's config: {srun}")
            check(any(a.startswith("--output=/shared/job/logs/") for a in srun), f"{s['name']}: no log file")
        roles = {s["name"]: s["argv"][1] for s in plan["services"]}
        check(roles.get("orchestrator") == "run" and roles.get("scorer") == "scorer"
              and roles.get("learner-0") == "learner" and roles.get("generator-1") == "generator",
              f"subcommands {roles}")
        check(plan["prepare"] is not None and plan["prepare"]["argv"][1] == "init-model",
              "no init-model step for a config with policy.init")
        cfg = yaml.safe_load(plan["config"])
        check(cfg["run"]["launch"] == "remote", "run.launch is not remote")
        check(cfg["generators"] == [{"address": "node2:50051"}, {"address": "node3:50051"}],
              f"generators {cfg['generators']}")
        check(cfg["scorer"]["address"] == "node1:50061", f"scorer.address {cfg['scorer'].get('address')}")
        check(cfg["learner"]["address"] == "node1:50071" and cfg["learner"]["rendezvous"] == "node1:29500"
              and cfg["learner"]["world_size"] == 1, f"learner {cfg['learner']}")
        if spar:
            if not os.path.exists(spar):
                print(f"SKIP: spar binary {spar} not built; `spar config check` not run")
            else:
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                    f.write(plan["config"])
                r = subprocess.run([spar, "config", "check", "--config", f.name], capture_output=True,
                                   text=True, cwd=ROOT)
                os.unlink(f.name)
                check(r.returncode == 0, f"spar config check rejects the job config: {r.stdout}{r.stderr}")

    # Two learner ranks, two generators per node, an outside scorer.
    plan = dry_run(["--learner-nodes", "2", "--generators-per-node", "2", "--scorer-address", "gpm.example:7000"],
                   nodelist="gpu[01-04]")
    if plan:
        check(plan["placement"] == {"gpu01": ["learner-0", "orchestrator"], "gpu02": ["learner-1"],
                                    "gpu03": ["generator-0", "generator-1"],
                                    "gpu04": ["generator-2", "generator-3"]}, f"placement {plan['placement']}")
        cfg = yaml.safe_load(plan["config"])
        check([g["address"] for g in cfg["generators"]] ==
              ["gpu03:50051", "gpu03:50052", "gpu04:50051", "gpu04:50052"], f"generators {cfg['generators']}")
        check(cfg["scorer"]["address"] == "gpm.example:7000", "scorer address not kept")
        check(cfg["learner"]["world_size"] == 2, "learner.world_size != 2")
        g1 = next(s for s in plan["services"] if s["name"] == "generator-1")
        check(g1["env"] == {"CUDA_VISIBLE_DEVICES": "1"} and "0.0.0.0:50052" in g1["argv"], f"generator-1 {g1}")
        l1 = next(s for s in plan["services"] if s["name"] == "learner-1")
        check(l1["argv"][-2:] == ["--rank", "1"], f"learner-1 argv {l1['argv']}")

    # Text plan (what an operator reads).
    env = dict(os.environ, SLURM_JOB_NODELIST="node[1-3]", PATH="/usr/bin:/bin")
    r = subprocess.run([sys.executable, LAUNCHER, "--config", "examples/local.yaml", "--dry-run"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    check(r.returncode == 0 and "node1: scorer, learner-0, orchestrator" in r.stdout
          and "node3: generator-1" in r.stdout, f"text plan: {r.stdout}{r.stderr}")
    r = subprocess.run([sys.executable, LAUNCHER, "--config", "examples/local.yaml", "--dry-run"],
                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=ROOT)
    check(r.returncode != 0 and "SLURM_JOB_NODELIST" in r.stderr, "no clear error outside an allocation")

    for e in errors:
        print("FAIL", e)
    if not errors:
        print("deploy/slurm: all checks passed")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
