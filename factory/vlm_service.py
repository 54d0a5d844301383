"""The run's one VLM, shared by every stage that asks it: perception's description and curation's
verdicts and explanations.

A VLM is the largest model of a run; loading one per stage doubled its memory (with vLLM: two
engines, each taking its own share of a GPU). So the driver starts ``factory.vlm.actors``
``VLMServer`` actors (each holding ``factory.vlm.num_gpus``) once per run, and the stages get a
``VLMClient`` over their handles: the same ``generate_json`` as a local backend, each call sent to
the next server in turn. Backend ``openai`` already is a service (any OpenAI-compatible server), so
its client is the local ``OpenAIBackend`` and no actor is started; backend ``scripted`` holds no model,
so each stage keeps its own. A server that dies is restarted
by Ray; a call that meets a dead or restarting server raises, and the stage fails that batch (it is
retried, never rejected).

Backend ``openai`` is checked once before the job plans any source (``check_vlm_server``): one small
schema-constrained request whose answer must validate. A server that is down, refuses the request
or ignores ``response_format`` (answers prose) is a configuration fault: the job stops with one line
instead of committing every photo as ``vlm_invalid_answer``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from agents.vlm.base import VLMRequest, VLMResult, VLMUnavailableError
from factory.config import Config, ModelsConfig
from factory.failures import StageFailingError

CHECK_NAME = "server_check"
CHECK_PROMPT = "Is this message a test? Answer in one word."  # no JSON asked for: only the schema can ask
CHECK_MAX_TOKENS = 32  # '{"ok": true}' and some room
CHECK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                "additionalProperties": False}
STRUCTURED_OUTPUTS = ("use a server that supports JSON-schema structured outputs (response_format), e.g. vLLM "
                      "(`vllm serve MODEL`)")


class VLMServer:
    """A Ray actor holding one VLM backend (``factory.models.vlm.load_vlm``)."""

    def __init__(self, models_json: str):
        from factory.models.vlm import load_vlm

        self.backend = load_vlm(ModelsConfig.model_validate_json(models_json))

    def model_id(self) -> str:
        return self.backend.model_id

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        return self.backend.generate_json(requests)


@dataclass
class VLMClient:
    """``generate_json`` over the run's ``VLMServer`` actors, round robin; picklable into stages.

    The servers load their model while the stages start theirs: nothing waits for them until a
    stage asks the first question (or the model id)."""

    servers: list[Any]  # Ray actor handles
    model_id_ref: Any = None  # the first server's model id, once it has loaded
    _model_id: str | None = field(default=None, repr=False)
    _turn: Any = field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        import ray

        if self._model_id is None:
            try:
                self._model_id = ray.get(self.model_id_ref)
            except ray.exceptions.RayError as err:  # reaches the stage's failure path: retried, never rejected
                raise RuntimeError(f"the VLM server could not start: {err}") from None
        return self._model_id

    def generate_json(self, requests: list[VLMRequest]) -> list[VLMResult]:
        import ray

        if not requests:
            return []
        if self._turn is None:
            self._turn = itertools.cycle(self.servers)
        return ray.get(next(self._turn).generate_json.remote(requests))

    def __getstate__(self) -> dict[str, Any]:
        return {"servers": self.servers, "model_id_ref": self.model_id_ref, "_model_id": self._model_id,
                "_turn": None}


def start_vlm_service(config: Config) -> VLMClient | None:
    """Start the run's VLM servers, without waiting for them to load; ``None`` for backend ``openai``
    (the stages talk to its server) and ``scripted`` (no model: each stage answers itself, sparing the
    run a process start)."""
    import ray

    if config.models.vlm.backend in ("openai", "scripted"):
        return None
    service = config.factory.vlm
    server_cls = ray.remote(num_gpus=service.num_gpus, num_cpus=service.num_cpus, max_restarts=-1,
                            max_concurrency=1)(VLMServer)
    servers = [server_cls.remote(config.models.model_dump_json()) for _ in range(service.actors)]
    return VLMClient(servers, servers[0].model_id.remote())


def stop_vlm_service(client: VLMClient | None) -> None:
    """Kill the run's VLM servers (they hold a GPU each)."""
    import ray

    for server in client.servers if client is not None else []:
        ray.kill(server)


def connect_vlm(config: Config, client: VLMClient | None):
    """The VLM a stage uses: the run's shared service, or (backends ``openai``, ``scripted``) its own."""
    if client is not None:
        return client
    from factory.models.vlm import load_vlm

    return load_vlm(config.models)


def check_vlm_server(config: Config) -> Config:
    """Backend ``openai``: ask the server one schema-constrained question before any source is planned.

    Returns the config with ``models.vlm.openai_model`` filled in from the server's ``/v1/models`` when
    it was unset (so the model is part of the config hash and of ``flawforge.json``). Raises
    ``StageFailingError`` with one line naming the URL, the model and what to do when the server cannot
    be reached, refuses the request or answers something that does not validate against the schema.
    Other backends are returned unchanged."""
    vlm = config.models.vlm
    if vlm.backend != "openai":
        return config
    from factory.models.vlm import load_vlm

    backend = load_vlm(config.models)
    backend.max_tokens = min(backend.max_tokens, CHECK_MAX_TOKENS)  # this instance asks one short question only
    try:
        model = backend.model_id  # openai_model unset: the one model /v1/models lists
        [answer] = backend.generate_json([VLMRequest(CHECK_PROMPT, CHECK_SCHEMA, name=CHECK_NAME)])
    except VLMUnavailableError as err:
        raise StageFailingError(f"start-up check failed: {err}; fix models.vlm (base_url, openai_model, "
                                f"api_key_env) or the server, then re-run the same command") from None
    if not answer.ok:
        raw = " ".join(answer.raw.split())[:80]
        raise StageFailingError(f"start-up check failed: VLM server {backend.base_url} (model {model}) ignores the JSON schema of response_format "
                                f"({answer.error[:120]}; it answered {raw!r}): {STRUCTURED_OUTPUTS}; "
                                "no source was used up")
    if vlm.openai_model is None:
        config = config.model_copy(deep=True)
        config.models.vlm.openai_model = model
    return config
