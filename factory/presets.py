"""The presets and how a config tree is assembled: preset, then a YAML file, then dotted overrides.

``factory.config.load_config`` validates the tree this module builds; the presets are plain data
(only what differs from the defaults in ``factory.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

PRESETS = ("tiny", "flux-dev", "flux-schnell")


def preset_overrides(name: str) -> dict[str, Any]:
    if name == "tiny":
        # Random tiny models of the production classes: proves mechanics, not artifact quality.
        return {
            # The VLM is scripted (no model); the tiny Grounding DINO and SAM get a seeded layout
            # (factory.models.tiny.layout) that meets the real perception thresholds.
            "models": {"vlm": {"backend": "scripted"}},
            "image": {"min_short_side": 128, "max_side": 192},
            "injection": {"num_steps": 4, "pe_steps": {"add": 4, "remove": 4, "distort": 3, "fuse": 3},
                          "value_steps": 3, "max_sequence_length": 16},
            # LPIPS window from the tiny models' own distribution (random AlexNet on tiny-FLUX edits):
            # the box-crop LPIPS (the default measure) of 39 distort artifacts (19 scikit-image photos x
            # 8 seeds, this preset, perception + synthesis without Ray: bench/tiny_lpips_window.py) ran
            # 0.021-0.179, median 0.064, P15 0.041, P85 0.096. The window is P15-P85 rounded, so about
            # 70 % of distortions pass.
            # The scripted VLM passes 70 % of triplet checks (models.vlm.scripted_visible_share).
            "curation": {"lpips_min": 0.04, "lpips_max": 0.10, "require_vlm_label": True},
            # A photo's 4 seeds share its perception and inversion, as in flux-dev (on 2 CPUs, n = 48:
            # 76 samples streamed in 7.7 s after the first row, against 11.3 s with 2 seeds together).
            # A local Ray starts without its dashboard: ray.init ~4 s instead of ~6 s on 2 CPUs.
            "factory": {"seeds_per_image": 16, "seeds_together": 4, "ray_dashboard": False,
                        "perception": {"batch_size": 4}, "synthesis": {"batch_size": 4}},
        }
    if name in ("flux-dev", "flux-schnell"):
        flux_id = "black-forest-labs/FLUX.1-dev" if name == "flux-dev" else "black-forest-labs/FLUX.1-schnell"
        overrides: dict[str, Any] = {
            "models": {
                "device": "cuda",
                "dtype": "bfloat16",
                "vlm": {"backend": "vllm", "model": {"kind": "pretrained", "path": "Qwen/Qwen2.5-VL-7B-Instruct"}},
                "grounding": {"kind": "pretrained", "path": "IDEA-Research/grounding-dino-tiny"},
                "segmentation": {"kind": "pretrained", "path": "facebook/sam-vit-huge"},
                "flux": {"kind": "pretrained", "path": flux_id},
                "lpips": {"kind": "pretrained", "path": "alex"},
            },
            "factory": {
                # A photo's 4 seeds are perceived once and inverted once (25/4 + 25 transformer passes
                # per sample instead of 50). Every pool starts at one actor and grows while its queue
                # backs up, to as many as the cluster (and its autoscaler) can place: synthesis takes
                # every free GPU, perception and curation (half a GPU each) follow its pace.
                "seeds_together": 4,
                "vlm": {"actors": 1, "num_gpus": 1.0},
                "perception": {"min_actors": 1, "max_actors": None, "batch_size": 8, "num_gpus": 0.5},
                # Compiled (one warm-up call per actor), T5 on the perception GPU, one photo group per
                # engine call.
                "synthesis": {"min_actors": 1, "max_actors": None, "batch_size": 8, "num_gpus": 1.0,
                              "compile": "on_cuda", "text_encoders_in": "perception"},
                "curation": {"min_actors": 1, "max_actors": None, "batch_size": 8, "num_gpus": 0.5},
            },
        }
        if name == "flux-schnell":
            # Schnell is timestep-distilled and guidance-free: fewer steps, no guidance embedding, and
            # sampled without the resolution time shift.
            overrides["injection"] = {"num_steps": 4, "guidance_invert": 0.0, "guidance_denoise": 0.0,
                                      "time_shift": False,
                                      "pe_steps": {"add": 4, "remove": 4, "distort": 3, "fuse": 3},
                                      "value_steps": 3, "max_sequence_length": 256}
        return overrides
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and the reason."""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(config)"
        lines.append(f"{field}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def config_tree(preset: str, file: str | Path | None, overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """The unvalidated config tree: ``preset``'s overrides, then ``file`` (YAML), then ``overrides``."""
    tree: dict[str, Any] = {"preset": preset}
    tree = _deep_merge(tree, preset_overrides(preset))
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        tree = _deep_merge(tree, loaded)
        tree["preset"] = preset
    if isinstance(overrides, list):
        parsed: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.field=value")
            key, raw = item.split("=", 1)
            parsed[key.strip()] = yaml.safe_load(raw)
        overrides = parsed
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    return tree
