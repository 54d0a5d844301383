"""The documented deployment is locked by default, and no secret leaves the process that holds it.

* ``ray_cluster.yaml`` and ``deploy/kuberay.yaml``, offline: Ray token authentication on, the dashboard
  never public, cloud credentials from the platform, no secret-looking value anywhere in the files;
* a loopback head started the way ``ray_cluster.yaml`` starts it refuses ``ray job submit`` without the
  token (or with a wrong one) and runs the job with it;
* a tiny factory run with secret environment variables set writes none of their values into its
  outputs (shards, ``report.json``, dataset card, ...), its console output or Ray's session logs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
KUBERAY_YAML = ROOT / "deploy" / "kuberay.yaml"
RAY_BIN = Path(sys.executable).parent
HEAD_GRACE_S = 5  # a test head's processes get SIGTERM together, then this long before SIGKILL

# ---------------------------------------------------------------------------------- secret scanning
SECRET_NAME = re.compile(r"token|secret|password|passwd|api_?key|access_?key|credential", re.I)
SECRET_VALUES = {
    "AWS access key id": re.compile(r"\bA[KS]IA[0-9A-Z]{16}\b"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "long hex string": re.compile(r"\b[0-9a-fA-F]{32,}\b"),
    "long base64 string": re.compile(r"[A-Za-z0-9+/]{40,}={0,2}"),
    "credentials in a URL": re.compile(r"://[^/\s:@]+:[^/\s@]+@"),
}
# NAME=value in a shell command: a secret's value may only come from elsewhere ($VAR, $(command)).
SHELL_ASSIGNMENT = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)=(\"|')?([^\s\"']*)")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry and list item below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield f"{path}[{i}]", None, value
            yield from _walk(value, f"{path}[{i}]")


def _is_path(value: str) -> bool:
    """A file path names where a secret lives (e.g. ``~/.ray/auth_token``); it is not the secret."""
    return re.fullmatch(r"[~.]?/[\w./-]*", value) is not None


def secret_findings(text: str, docs: list[Any]) -> list[str]:
    """Why the YAML ``text`` (parsed: ``docs``) looks like it holds a secret; empty when it does not."""
    found = [f"{what}: {m.group(0)[:12]}..." for what, rx in SECRET_VALUES.items() for m in rx.finditer(text)]
    for doc in docs:
        for path, key, value in _walk(doc):
            if isinstance(key, str) and SECRET_NAME.search(key) and not key.lower().endswith("name") \
                    and isinstance(value, (str, int)) and str(value) and not _is_path(str(value)):
                found.append(f"{path}: a literal value under a secret-looking key")
            if isinstance(value, dict) and isinstance(value.get("name"), str) and "value" in value \
                    and SECRET_NAME.search(value["name"]):
                found.append(f"{path}: environment variable {value['name']} has a literal value (use valueFrom)")
            if isinstance(value, str):
                for m in SHELL_ASSIGNMENT.finditer(value):
                    if SECRET_NAME.search(m.group(1)) and not m.group(3).startswith("$"):
                        found.append(f"{path}: {m.group(1)}= is assigned a literal in a command")
    return found


def _load(path: Path) -> tuple[str, list[Any]]:
    text = path.read_text()
    return text, [d for d in yaml.safe_load_all(text) if d is not None]


# ----------------------------------------------------------------------------- ray_cluster.yaml
def _split_env(command: str) -> tuple[dict[str, str], list[str]]:
    """A shell command's leading NAME=value assignments and the words after them."""
    words = shlex.split(command)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    return env, words


def _flags(words: list[str]) -> dict[str, str]:
    return dict(w[2:].split("=", 1) if "=" in w else (w[2:], "") for w in words if w.startswith("--"))


def _ray_starts(config: dict) -> list[tuple[dict[str, str], list[str]]]:
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [_split_env(c) for c in commands if "ray start" in c]
    assert len(starts) == 2 and all(words[:2] == ["ray", "start"] for _, words in starts)
    return starts


def cluster_problems(config: dict, text: str) -> list[str]:
    """The security properties of a cluster-launcher config; an empty list when all hold."""
    problems = []
    for env, words in _ray_starts(config):
        flags = _flags(words)
        auth = env.get("RAY_AUTH_MODE") == "token"
        if not auth:
            problems.append(f"`{' '.join(words[:3])}` runs without RAY_AUTH_MODE=token")
        host = flags.get("dashboard-host", "127.0.0.1")  # Ray's default is the loopback
        if "head" in flags and host not in ("127.0.0.1", "localhost"):
            problems.append(f"the dashboard listens on {host}, not on the head's loopback")
    if config.get("file_mounts", {}).get("~/.ray/auth_token") != "~/.ray/auth_token":
        problems.append("the Ray token is not copied from the launching machine's ~/.ray/auth_token")
    for name, node_type in config["available_node_types"].items():
        if "IamInstanceProfile" not in node_type["node_config"]:
            problems.append(f"node type {name} has no IamInstanceProfile")
    for command in config.get("setup_commands", []) + config.get("initialization_commands", []):
        if re.search(r"\blogin\b|set -x", command):
            problems.append(f"a setup command may store or echo a secret: {command[:60]}")
    if re.search(r"RAY_AUTH_MODE=disabled", text):
        problems.append("RAY_AUTH_MODE=disabled appears in the config")
    return problems + secret_findings(text, [config])


@pytest.fixture
def cluster() -> tuple[dict, str]:
    text, [config] = _load(CLUSTER_YAML)
    return config, text


def test_cluster_config_is_locked(cluster):
    config, text = cluster
    assert cluster_problems(config, text) == []
    head_env, head = _ray_starts(config)[0]
    assert _flags(head)["dashboard-host"] == "127.0.0.1" and head_env == {"RAY_AUTH_MODE": "token"}


def test_cluster_checks_catch_an_open_cluster(cluster):
    config, text = cluster
    open_head = copy.deepcopy(config)
    open_head["head_start_ray_commands"][-1] = (
        "ray start --head --port=6379 --dashboard-host=0.0.0.0 --autoscaling-config=~/ray_bootstrap_config.yaml")
    problems = cluster_problems(open_head, text)
    assert any("without RAY_AUTH_MODE" in p for p in problems) and any("0.0.0.0" in p for p in problems)

    leaky = copy.deepcopy(config)
    leaky["setup_commands"].append("HF_TOKEN=hf_" + "a" * 34 + " hf download black-forest-labs/FLUX.1-dev")
    leaky["setup_commands"].append("huggingface-cli login --token $HF_TOKEN")
    leaky["provider"]["aws_secret_access_key"] = "x"
    del leaky["available_node_types"]["gpu_8x_h100"]["node_config"]["IamInstanceProfile"]
    del leaky["file_mounts"]["~/.ray/auth_token"]
    problems = cluster_problems(leaky, yaml.safe_dump(leaky))
    for expected in ("Hugging Face token", "HF_TOKEN= is assigned", "login", "aws_secret_access_key",
                     "gpu_8x_h100 has no IamInstanceProfile", "token is not copied"):
        assert any(expected in p for p in problems), (expected, problems)
    assert secret_findings("RAY_AUTH_TOKEN=" + secrets.token_hex(32), []) != []


# ---------------------------------------------------------------------------- deploy/kuberay.yaml
def kuberay_problems(docs: list[dict], text: str) -> list[str]:
    """The security properties of the KubeRay example; an empty list when all hold."""
    problems = []
    clusters = [d["spec"]["rayClusterSpec"] if d["kind"] == "RayJob" else d["spec"]
                for d in docs if d.get("kind") in ("RayJob", "RayCluster", "RayService")]
    if not clusters:
        problems.append("no RayJob / RayCluster in the file")
    for spec in clusters:
        auth = (spec.get("authOptions") or {}).get("mode") == "token"
        if not auth:
            problems.append("authOptions.mode is not 'token'")
        head = spec["headGroupSpec"]
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            problems.append(f"the head service is {head['serviceType']}: the dashboard would be public")
        if head.get("enableIngress"):
            problems.append("the head has an Ingress")
        host = str((head.get("rayStartParams") or {}).get("dashboard-host", ""))
        if host in ("0.0.0.0", "::") and not auth:
            problems.append("the dashboard listens on every interface without authentication")
    for doc in docs:
        if doc.get("kind") == "Ingress":
            problems.append("an Ingress exposes the cluster")
        if doc.get("kind") == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
            problems.append("a public Service exposes the cluster")
        if doc.get("kind") == "Secret":
            problems.append("a Secret with its value is part of the example")
    return problems + secret_findings(text, docs)


def test_kuberay_example_is_locked():
    text, docs = _load(KUBERAY_YAML)
    assert kuberay_problems(docs, text) == []
    spec = docs[0]["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "flawforge-ray-token"}
    workers = spec["workerGroupSpecs"][0]["template"]["spec"]
    assert [c["name"] for c in workers["containers"]] == ["ray-worker"]
    assert not any(e["name"] == "HF_TOKEN" for c in workers["containers"] for e in c.get("env", [])), \
        "only the init container that fetches the weights may see the Hugging Face token"


def test_kuberay_checks_catch_an_open_cluster():
    text, docs = _load(KUBERAY_YAML)
    open_docs = copy.deepcopy(docs)
    spec = open_docs[0]["spec"]["rayClusterSpec"]
    del spec["authOptions"]
    spec["headGroupSpec"].update(serviceType="LoadBalancer", enableIngress=True,
                                 rayStartParams={"dashboard-host": "0.0.0.0"})
    spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "RAY_AUTH_TOKEN", "value": "not-a-real-token"})
    open_docs.append({"kind": "Secret", "stringData": {"auth_token": "not-a-real-token"}})
    problems = kuberay_problems(open_docs, text)
    for expected in ("authOptions", "LoadBalancer", "Ingress", "every interface", "RAY_AUTH_TOKEN has a literal",
                     "a Secret", "auth_token: a literal"):
        assert any(expected in p for p in problems), (expected, problems)


# ------------------------------------------------------------------------ a loopback head with auth
class LocalHead:
    """A running loopback head: its dashboard URL, its environment and its HOME (holding the token)."""

    def __init__(self, url: str, env: dict[str, str], home: Path):
        self.url, self.env, self.home = url, env, home

    def client_env(self, token: str | None = None, outsider: bool = False) -> dict[str, str]:
        """The environment of a ``ray`` CLI call: as documented (RAY_AUTH_MODE=token, the token in
        ~/.ray/auth_token), with another ``token`` in RAY_AUTH_TOKEN, or an ``outsider``'s (no token at all)."""
        env = {k: v for k, v in self.env.items() if not k.startswith("RAY_AUTH_")}
        if outsider:
            elsewhere = self.home.parent / "outsider"
            elsewhere.mkdir(exist_ok=True)
            return dict(env, HOME=str(elsewhere))
        return dict(env, RAY_AUTH_MODE="token", **({"RAY_AUTH_TOKEN": token} if token else {}))


@contextmanager
def local_head(home: Path, num_cpus: int = 2, extra_env: dict[str, str] | None = None) -> Iterator[LocalHead]:
    """``ray start --head`` on the loopback, as ``ray_cluster.yaml`` starts the head: its environment
    (RAY_AUTH_MODE=token) and flags, the token in ``home/.ray/auth_token`` (HOME=home), plus free ports
    and a temp dir. ``--block`` keeps Ray's processes in one process group of ours: teardown ends exactly
    those (never ``ray stop``, which would end every Ray on the machine)."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    [(start_env, words)] = [_split_env(c) for c in config["head_start_ray_commands"] if "ray start" in c]
    flags = {k: v for k, v in _flags(words).items() if k not in ("port", "autoscaling-config")}
    token_file = home / ".ray" / "auth_token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = dict(os.environ, **start_env, **(extra_env or {}), HOME=str(home), PATH=f"{RAY_BIN}:{os.environ['PATH']}",
               RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(name, None)  # the token comes from the default path, as on the cluster's nodes
    dashboard = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ffsec", dir="/tmp"))  # Ray's socket paths must stay < 108 bytes
    args = [str(RAY_BIN / "ray"), "start", "--block", *(f"--{k}={v}" if v else f"--{k}" for k, v in flags.items()),
            "--node-ip-address=127.0.0.1", f"--port={free_port()}", f"--num-cpus={num_cpus}",
            "--include-dashboard=true", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    log = temp_dir / "ray_start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 300  # a loaded 2-core machine starts Ray slowly
        while True:
            assert proc.poll() is None, f"ray start exited {proc.returncode}: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"the dashboard never answered: {log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/authentication_mode", timeout=2) as reply:
                    assert b'"token"' in reply.read(), "the head runs without token authentication"
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        yield LocalHead(url, env, home)
    finally:
        # Every process of the head at once: `ray start --block` alone stops them one after the other, each
        # with its own grace period (30 s on 2 cores).
        stop_process_group(proc, HEAD_GRACE_S)
        strays = _processes_naming(temp_dir)  # any of ours that left the group: their command names our dir
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not strays, f"Ray processes outlived the head's process group: {strays}"


def _processes_naming(path: Path) -> list[int]:
    """Live processes whose command line contains ``path`` (this test's own Ray temp dir)."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                if str(path).encode() in (proc_dir / "cmdline").read_bytes():
                    found.append(int(proc_dir.name))
            except OSError:
                pass
    return found


def _submit(head: LocalHead, entrypoint: list[str], **client) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY_BIN / "ray"), "job", "submit", f"--address={head.url}", "--", *entrypoint],
                          env=head.client_env(**client), capture_output=True, text=True, timeout=300,
                          cwd=head.home)


def test_loopback_head_refuses_jobs_without_the_token(tmp_path):
    driver = ["python", "-c", "import ray; ray.init(); print('cpus', ray.cluster_resources()['CPU'])"]
    with local_head(tmp_path / "home", num_cpus=1) as head:
        outsider = _submit(head, driver, outsider=True)
        assert outsider.returncode != 0
        assert "Authentication required" in outsider.stderr and "Job '" not in outsider.stdout

        wrong = _submit(head, driver, token=secrets.token_hex(32))
        assert wrong.returncode != 0 and "Authentication failed" in wrong.stderr

        ok = _submit(head, driver)  # as the README submits; the job's driver joins the cluster with the token
        assert ok.returncode == 0, (ok.stdout[-3000:], ok.stderr[-3000:])
        assert "cpus 1.0" in ok.stdout and "succeeded" in ok.stdout
        token = (head.home / ".ray" / "auth_token").read_text()
        for run in (outsider, wrong, ok):
            assert token not in run.stdout + run.stderr


# ------------------------------------------------------------------- a factory run holds no secrets
def _texts_of(path: Path) -> Iterator[tuple[str, str]]:
    """(name, text) for every file under ``path``; Parquet files as their decoded non-binary columns."""
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        if file.suffix == ".parquet":
            table = pq.read_table(file)
            for name in table.column_names:
                column = table.column(name)
                if not pa.types.is_binary(column.type) and not pa.types.is_struct(column.type):
                    yield f"{file}:{name}", str(column.to_pylist())
                elif pa.types.is_struct(column.type):  # images: everything but the PNG bytes
                    fields = [f.name for f in column.type if not pa.types.is_binary(f.type)]
                    yield f"{file}:{name}", str([{k: (row or {}).get(k) for k in fields}
                                                for row in column.to_pylist()])
        else:
            yield str(file), file.read_bytes().decode("utf-8", errors="replace")


def test_factory_outputs_hold_no_secret_values(samples_run_with_secrets):
    """The session's tiny run (``conftest.samples_run_with_secrets``) ran with credentials in its environment:
    none of their values is in its shards, report, dataset card, console or Ray's session logs."""
    secret_run = samples_run_with_secrets
    done, out = secret_run.done, secret_run.out
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"factory run with secrets set: {secret_run.seconds:.1f} s")
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "README.md", "data"} <= names
    texts = dict(_texts_of(out))
    assert any(name.endswith(":provenance") for name in texts), "no provenance column was scanned"
    texts["console"] = done.stdout + done.stderr
    logs = dict(_texts_of(secret_run.ray_tmp))
    assert any("session_" in name for name in logs), "Ray's session logs were not where the run was told"
    texts.update(logs)
    leaks = [(env_name, file) for env_name, value in secret_run.secrets.items()
             for file, text in texts.items() if value in text]
    assert leaks == [], leaks


def test_provenance_names_models_not_credentials(samples_run):
    rows = pq.read_table(samples_run / "data", columns=["provenance"]).to_pylist()
    provenances = [json.loads(r["provenance"]) if isinstance(r["provenance"], str) else r["provenance"]
                   for r in rows]
    models = [p.get("models") or p for p in provenances]  # typed shards nest the model ids under "models"
    assert any(m.get("flux") and m.get("vlm") for m in models), models  # ids (tiny: a description)
    for provenance in provenances:
        bad = [path for path, key, _ in _walk(provenance) if isinstance(key, str)
               and (SECRET_NAME.search(key) or re.search(r"env|header|cookie", key, re.I))]
        assert bad == [], bad
