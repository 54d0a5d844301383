"""The base of every settings section (strict pydantic models) and the artifact tools' names.

Each tool, agent and the engine declares the typed settings it reads next to its code
(``tools.add.AddConfig``, ``tools.flux.settings.InjectionConfig``, ``agents.settings``);
``factory.config`` composes them into a job's config.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

ToolName = Literal["add", "remove", "distort", "fuse"]
TOOLS: tuple[ToolName, ...] = get_args(ToolName)  # the same names as shards.record.ARTIFACT_TOOLS (a test checks)


class Strict(BaseModel):
    """Base for every settings section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
