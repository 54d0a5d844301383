"""Pixel masks ↔ FLUX token cells.

One token covers one 16×16-pixel cell (8× VAE, 2×2 packing). Cell index = row · W + col with no
text offset, where W is the image width in cells. A mask covers a cell when any pixel in it is set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CELL = 16


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

    def pixel_mask(self, cells: np.ndarray, dilation: int = 0) -> np.ndarray:
        """Cells → (H, W) bool pixel mask, optionally dilated by ``dilation`` cells (square)."""
        cm = dilate(self.to_cell_mask(cells), dilation)
        return np.repeat(np.repeat(cm, CELL, axis=0), CELL, axis=1)


def dilate(cell_mask: np.ndarray, radius: int) -> np.ndarray:
    """Square (Chebyshev) dilation of a boolean grid by ``radius`` cells."""
    out = cell_mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        out = grown
    return out


def l1_distance(cell_mask: np.ndarray) -> np.ndarray:
    """L1 (city-block) distance of every cell to the nearest set cell (inf when none is set)."""
    from scipy.ndimage import distance_transform_cdt

    if not cell_mask.any():
        return np.full(cell_mask.shape, np.inf)
    return distance_transform_cdt(~cell_mask, metric="taxicab").astype(np.float64)
