"""Pixel masks ↔ FLUX token cells, and the mask geometry every stage shares.

One token covers one 16×16-pixel cell (8× VAE, 2×2 packing). Cell index = row · W + col with no
text offset, where W is the image width in cells. A mask covers a cell when any pixel in it is set.
``CELL``, ``dilate`` (the change region's dilation) and ``containment`` are defined here only
(docs/ARCHITECTURE.md, "Token cells").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_cdt

CELL = 16  # pixels per token side: the VAE's 8× downsampling times FLUX's 2×2 packing


@dataclass(frozen=True)
class Grid:
    rows: int
    cols: int

    @classmethod
    def from_image(cls, height: int, width: int) -> Grid:
        if height % CELL or width % CELL or height <= 0 or width <= 0:
            raise ValueError(f"image sides must be positive multiples of {CELL}, got {width}x{height}")
        return cls(height // CELL, width // CELL)

    @property
    def size(self) -> int:
        return self.rows * self.cols

    @property
    def shape_px(self) -> tuple[int, int]:
        return self.rows * CELL, self.cols * CELL

    def index(self, row: np.ndarray | int, col: np.ndarray | int) -> np.ndarray:
        return np.asarray(row) * self.cols + np.asarray(col)

    def rowcol(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cells = np.asarray(cells, dtype=np.int64)
        return cells // self.cols, cells % self.cols

    def in_bounds(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (rows >= 0) & (rows < self.rows) & (cols >= 0) & (cols < self.cols)

    def cell_mask(self, mask_px: np.ndarray) -> np.ndarray:
        """(H, W) pixel mask → (rows, cols) bool: a cell is set when any of its pixels is."""
        if mask_px.shape != self.shape_px:
            raise ValueError(f"mask of shape {mask_px.shape} does not match the grid's {self.shape_px}")
        return mask_px.reshape(self.rows, CELL, self.cols, CELL).any(axis=(1, 3))

    def cells(self, mask_px: np.ndarray) -> np.ndarray:
        """Sorted indices of the cells a pixel mask covers."""
        return np.flatnonzero(self.cell_mask(mask_px)).astype(np.int64)

    def cells_of(self, cell_mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(cell_mask).astype(np.int64)

    def to_cell_mask(self, cells: np.ndarray) -> np.ndarray:
        out = np.zeros(self.size, dtype=bool)
        out[np.asarray(cells, dtype=np.int64)] = True
        return out.reshape(self.rows, self.cols)

    def to_pixels(self, cell_mask: np.ndarray) -> np.ndarray:
        """(rows, cols) bool → (H, W) bool: every cell becomes its ``CELL``×``CELL`` pixels."""
        return np.repeat(np.repeat(cell_mask, CELL, axis=0), CELL, axis=1)

    def change_cells(self, cells: np.ndarray, dilation: int) -> np.ndarray:
        """The (rows, cols) cells an injection into ``cells`` may change: the cells, dilated."""
        return dilate(self.to_cell_mask(cells), dilation)

    def pixel_mask(self, cells: np.ndarray, dilation: int = 0) -> np.ndarray:
        """Cells → (H, W) bool pixel mask, optionally dilated by ``dilation`` cells (square)."""
        return self.to_pixels(self.change_cells(cells, dilation))


def dilate(cell_mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation of a boolean grid by ``radius`` cells; nothing grows in from outside."""
    if radius <= 0:
        return cell_mask.copy()
    return binary_dilation(cell_mask, structure=np.ones((2 * radius + 1, 2 * radius + 1), bool))


def containment(inner: np.ndarray, outer: np.ndarray) -> float:
    """|inner ∩ outer| / |inner|: the share of ``inner`` inside ``outer`` (0 for an empty ``inner``).

    Divides by ``inner``'s own area, so a small part overlapping its parent only at the edge scores
    low; dividing by the intersection instead would let any overlap pass."""
    area = inner.sum()
    return float((inner & outer).sum() / area) if area else 0.0


def l1_distance(cell_mask: np.ndarray) -> np.ndarray:
    """L1 (city-block) distance of every cell to the nearest set cell (inf when none is set)."""
    if not cell_mask.any():
        return np.full(cell_mask.shape, np.inf)
    return distance_transform_cdt(~cell_mask, metric="taxicab").astype(np.float64)
