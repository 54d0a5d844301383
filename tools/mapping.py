"""What every tool returns: target → reference cell pairs plus the pixel mask they change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tools.grid import CELL, Grid


@dataclass
class ArtifactMapping:
    """Token ``target_cells[i]`` takes the position and value embedding of ``reference_cells[i]``."""

    tool: str
    target_cells: np.ndarray
    reference_cells: np.ndarray
    grid: Grid
    kernel: str | None = None
    entity: str = ""
    subentity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.target_cells = np.asarray(self.target_cells, dtype=np.int64)
        self.reference_cells = np.asarray(self.reference_cells, dtype=np.int64)

    def validate(self) -> None:
        if self.target_cells.shape != self.reference_cells.shape:
            raise ValueError("target and reference cells must pair up one to one")
        for name, cells in (("target", self.target_cells), ("reference", self.reference_cells)):
            if cells.size and (cells.min() < 0 or cells.max() >= self.grid.size):
                raise ValueError(f"{name} cells out of the {self.grid.rows}x{self.grid.cols} grid")
        if np.unique(self.target_cells).size != self.target_cells.size:
            raise ValueError("a target cell appears twice")
        if np.any(self.target_cells == self.reference_cells) and not self.identity_allowed:
            raise ValueError("identity pairs (target == reference) change nothing")

    @property
    def identity_allowed(self) -> bool:
        """A distortion whose whole part is the target keeps its unmoved cells (identity pairs)."""
        return self.tool == "distort" and self.meta.get("targets") == "part"

    @property
    def empty(self) -> bool:
        return self.target_cells.size == 0

    def target_mask(self, dilation: int = 0) -> np.ndarray:
        return self.grid.pixel_mask(self.target_cells, dilation)

    def cells_used(self) -> set[int]:
        return set(self.target_cells.tolist()) | set(self.reference_cells.tolist())

    def bbox(self) -> list[int]:
        """[x0, y0, x1, y1] in pixels (exclusive end) around the target cells."""
        rows, cols = self.grid.rowcol(self.target_cells)
        return [int(cols.min()) * CELL, int(rows.min()) * CELL, (int(cols.max()) + 1) * CELL,
                (int(rows.max()) + 1) * CELL]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the plan; unset (``None``) fields are left out, as the shard schema reads them."""
        data = {"tool": self.tool, "kernel": self.kernel, "entity": self.entity, "subentity": self.subentity,
                "grid": [self.grid.rows, self.grid.cols], "target_cells": self.target_cells.tolist(),
                "reference_cells": self.reference_cells.tolist(), "meta": self.meta}
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactMapping:
        return cls(tool=d["tool"], target_cells=np.array(d["target_cells"]),
                   reference_cells=np.array(d["reference_cells"]), grid=Grid(*d["grid"]),
                   kernel=d.get("kernel"), entity=d.get("entity", ""), subentity=d.get("subentity"),
                   meta=d.get("meta", {}))


def drop_identity_and_out_of_bounds(grid: Grid, t_rows, t_cols, r_rows, r_cols) -> tuple[np.ndarray, np.ndarray]:
    """Keep pairs whose both ends lie in the grid and that actually move something."""
    keep = grid.in_bounds(t_rows, t_cols) & grid.in_bounds(r_rows, r_cols)
    targets = grid.index(t_rows[keep], t_cols[keep])
    references = grid.index(r_rows[keep], r_cols[keep])
    moved = targets != references
    return targets[moved].astype(np.int64), references[moved].astype(np.int64)
