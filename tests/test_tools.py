"""The artifact toolbox: grid rules, each tool's invariants, determinism, and the plan."""

import numpy as np
import pytest

from agents.settings import PerceptionConfig
from tools.add import add_mapping
from tools.distort import KERNELS, distort_mapping
from tools.fuse import fuse_mapping
from tools.grid import CELL, Grid, containment, dilate, l1_distance
from tools.mapping import ArtifactMapping
from tools.plan import Entity, Part, ToolsConfig, plan_artifacts
from tools.remove import remove_mapping

GRID = Grid(12, 16)
TOOLS = ToolsConfig()
SHARES, MAX_ARTIFACTS = PerceptionConfig().tool_shares, PerceptionConfig().max_artifacts


def rect(r0, r1, c0, c1, grid=GRID):
    m = np.zeros((grid.rows, grid.cols), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_grid_any_pixel_rule_and_round_trip():
    grid = Grid.from_image(48, 64)
    px = np.zeros((48, 64), bool)
    px[17, 33] = True  # one pixel in cell (1, 2)
    assert grid.cells(px).tolist() == [1 * 4 + 2]
    assert grid.pixel_mask(grid.cells(px)).sum() == CELL * CELL
    assert grid.pixel_mask([5], dilation=1).sum() == 9 * CELL * CELL
    with pytest.raises(ValueError, match="multiples of 16"):
        Grid.from_image(50, 64)


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
def test_dilate_is_the_chebyshev_ball_and_nothing_grows_in_from_outside(radius):
    from scipy.ndimage import distance_transform_cdt

    mask = np.random.default_rng(radius).random((13, 17)) < 0.04
    mask[0, 0] = mask[12, 16] = True  # corners: the border must not add cells
    chebyshev = distance_transform_cdt(~mask, metric="chessboard")
    assert np.array_equal(dilate(mask, radius), chebyshev <= radius)
    assert not dilate(np.zeros((4, 4), bool), radius).any()


def test_containment_divides_by_the_inner_area():
    inner, outer = rect(0, 4, 0, 4), rect(0, 4, 2, 8)
    assert containment(inner, outer) == 0.5 and containment(outer, inner) == pytest.approx(8 / 24)
    assert containment(np.zeros_like(inner), outer) == 0.0


def test_add_copy_lands_on_parent_next_to_itself():
    parent, finger, other = rect(2, 10, 2, 12), rect(4, 6, 5, 7), rect(4, 6, 9, 11)
    m = add_mapping(finger, parent, [other], GRID, TOOLS.add, seed=0)
    m.validate()
    tr, tc = GRID.rowcol(m.target_cells)
    assert parent[tr, tc].mean() > 0.5
    assert not set(m.target_cells) & set(GRID.cells_of(finger))  # disjoint from its reference
    assert set(m.reference_cells) <= set(GRID.cells_of(finger))
    assert m.to_dict() == add_mapping(finger, parent, [other], GRID, TOOLS.add, seed=0).to_dict()


def test_remove_references_are_background():
    part, sibling = rect(4, 7, 4, 7), rect(4, 7, 7, 9)
    m = remove_mapping(part, np.zeros_like(part), [sibling], GRID, TOOLS.remove, seed=1)
    m.validate()
    assert set(m.target_cells) == set(GRID.cells_of(part))
    refs = set(m.reference_cells)
    assert not refs & set(GRID.cells_of(part)) and not refs & set(GRID.cells_of(sibling))


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_distort_kernel_moves_cells_inside_the_entity(kernel):
    entity, arm = rect(1, 11, 1, 15), rect(4, 7, 2, 14)
    m = distort_mapping(arm, entity, GRID, TOOLS.distort, seed=3, kernel=kernel)
    assert m is not None and m.kernel == kernel and m.target_cells.size > 0
    m.validate()  # in bounds; identity pairs only because the whole part is the target
    assert set(m.reference_cells) <= set(GRID.cells_of(entity | arm))
    assert set(m.target_cells.tolist()) == set(GRID.cells_of(arm).tolist())  # the whole part: target and label
    again = distort_mapping(arm, entity, GRID, TOOLS.distort, seed=3, kernel=kernel)
    assert np.array_equal(m.reference_cells, again.reference_cells)


def test_distort_without_kernel_draws_one_of_the_configured_kernels():
    seen = {distort_mapping(rect(4, 7, 2, 14), rect(1, 11, 1, 15), GRID, TOOLS.distort, seed=s).kernel
            for s in range(30)}
    assert seen == set(KERNELS)


def test_fuse_references_come_from_the_other_instance():
    a, b = rect(2, 10, 1, 9), rect(3, 11, 6, 15)
    assert containment(a, b) < 0.7
    m = fuse_mapping(a, b, GRID, TOOLS.fuse, seed=2)
    m.validate()
    for t, r, in zip(m.target_cells, m.reference_cells):
        tr, tc = GRID.rowcol(np.array([t]))
        rr, rc = GRID.rowcol(np.array([r]))
        assert (a & ~b)[rr, rc].all() or (b & ~a)[rr, rc].all()
    assert fuse_mapping(rect(2, 10, 1, 9), rect(3, 5, 3, 5), GRID, TOOLS.fuse, 0) is None  # contained


def test_plan_is_disjoint_balanced_and_deterministic():
    entities = [Entity("person", rect(1, 11, 1, 8)), Entity("person", rect(2, 11, 5, 14))]
    parts = [Part("hand", "peripheral", rect(8, 10, 2, 4), 0), Part("arm", "intermediate", rect(3, 6, 2, 7), 0),
             Part("ear", "peripheral", rect(2, 4, 11, 13), 1), Part("leg", "intermediate", rect(7, 11, 10, 13), 1)]
    plans = [plan_artifacts(entities, parts, GRID, TOOLS, SHARES, MAX_ARTIFACTS, seed=s) for s in range(6)]
    for plan in plans:
        assert 1 <= len(plan) <= 3
        used: set[int] = set()
        for m in plan:
            assert not m.cells_used() & used
            used |= m.cells_used()
        assert len({m.tool for m in plan}) == len(plan)  # balanced: no tool twice while others wait
    again = plan_artifacts(entities, parts, GRID, TOOLS, SHARES, MAX_ARTIFACTS, seed=0)
    assert [m.to_dict() for m in again] == [m.to_dict() for m in plans[0]]


def test_mapping_round_trip_and_validation():
    m = ArtifactMapping("add", [1, 2], [3, 4], GRID, meta={"offset": [0, 2]})
    assert ArtifactMapping.from_dict(m.to_dict()).to_dict() == m.to_dict()
    with pytest.raises(ValueError, match="identity"):
        ArtifactMapping("add", [1], [1], GRID).validate()
    with pytest.raises(ValueError, match="out of"):
        ArtifactMapping("add", [1], [GRID.size], GRID).validate()


# ------------------------------------------------------------------ the authors' geometry, tool by tool
def disc(grid, cy, cx, radius):
    r, c = np.ogrid[:grid.rows, :grid.cols]
    return (r - cy) ** 2 + (c - cx) ** 2 <= radius ** 2


def test_add_duplicates_a_large_part_instead_of_shifting_it_by_one_cell():
    grid = Grid(48, 64)
    parent, part = rect(2, 46, 2, 62, grid), disc(grid, 24, 32, 8)  # a part 17 cells wide
    m = add_mapping(part, parent, [], grid, TOOLS.add, seed=0)
    m.validate()
    targets = set(m.target_cells.tolist())
    assert not targets & set(grid.cells_of(part))  # disjoint from the original
    assert len(targets) >= part.sum() // 2  # a copy of about the part's size, not a 17-cell sliver
    tr, tc = grid.rowcol(m.target_cells)
    assert parent[tr, tc].all()  # lands on the parent
    dy, dx = m.meta["offset"]
    assert abs(dy) + abs(dx) > 8  # anchored on the ring outside the part, not next to its centre
    assert set((m.target_cells - m.reference_cells).tolist()) == {dy * grid.cols + dx}  # one rigid shift
    assert m.to_dict() == add_mapping(part, parent, [], grid, TOOLS.add, seed=0).to_dict()


def test_add_avoids_other_instances_of_the_same_class():
    grid = Grid(24, 24)
    parent, ear = rect(2, 22, 2, 22, grid), rect(10, 13, 10, 13, grid)
    siblings = [rect(10, 13, 14, 17, grid), rect(10, 13, 6, 9, grid)]  # left and right of the ear
    m = add_mapping(ear, parent, siblings, grid, TOOLS.add, seed=4)
    m.validate()
    tr, tc = grid.rowcol(m.target_cells)
    assert not np.logical_or.reduce(siblings)[tr, tc].any()
    assert m.meta["offset"][0] != 0  # moved up or down, where there is room


def test_remove_prefers_background_ring_cells_when_they_are_the_majority():
    part, head = rect(3, 5, 6, 9), rect(5, 11, 2, 13)  # an ear on top of a head: 9 of 14 ring cells are background
    m = remove_mapping(part, head, [], GRID, TOOLS.remove, seed=0)
    m.validate()
    assert set(m.target_cells) == set(GRID.cells_of(part))
    rr, rc = GRID.rowcol(m.reference_cells)
    assert not head[rr, rc].any() and not part[rr, rc].any()
    assert set(m.reference_cells) <= set(GRID.cells_of(dilate(part, 1)))  # the 8-neighbour ring
    tr, tc = GRID.rowcol(m.target_cells)
    assert (np.abs(tr - rr) + np.abs(tc - rc)).max() <= 2  # each target takes a nearest ring cell


def test_remove_keeps_entity_ring_cells_when_background_is_the_minority():
    part, head = rect(3, 5, 6, 9), rect(3, 11, 2, 13)  # only the row above is background: 5 of 14
    m = remove_mapping(part, head, [], GRID, TOOLS.remove, seed=0)
    tr, tc = GRID.rowcol(m.target_cells)
    rr, rc = GRID.rowcol(m.reference_cells)
    assert np.all(np.abs(tr - rr) + np.abs(tc - rc) == 1)  # nearest ring cell, whatever it lies on
    assert head[rr, rc].any()


def test_fuse_regions_copy_from_the_other_entity_and_none_is_dropped():
    grid = Grid(16, 20)
    a, b = rect(2, 12, 1, 10, grid), rect(4, 14, 7, 13, grid)  # B's exclusive cells outside the band: a thin strip
    a_only, b_only = a & ~b, b & ~a
    band = (a | b) & (l1_distance(a & b) <= TOOLS.fuse.band_radius)
    to_a, to_b = l1_distance(a_only), l1_distance(b_only)
    for seed in range(4):
        m = fuse_mapping(a, b, grid, TOOLS.fuse, seed=seed)
        m.validate()
        assert sorted(m.target_cells.tolist()) == grid.cells_of(band).tolist()  # every band cell, no region dropped
        rr, rc = grid.rowcol(m.reference_cells)
        assert not band[rr, rc].any()  # a reference is never itself a band cell
        br, bc = np.nonzero(band)
        centroid = np.stack([br.mean(), bc.mean()])
        first = np.array(grid.rowcol(m.meta["regions"][0]["seed"]), float)
        nearest = min((r - centroid[0]) ** 2 + (c - centroid[1]) ** 2 for r, c in zip(br, bc))
        assert np.isclose(((first - centroid) ** 2).sum(), nearest)  # the first seed is nearest the centroid
        start = 0
        for region in m.meta["regions"]:
            sr, sc = grid.rowcol(region["seed"])
            label = "A" if to_a[sr, sc] < to_b[sr, sc] else "B" if to_b[sr, sc] < to_a[sr, sc] else "neutral"
            assert region["label"] == label  # the entity whose exclusive cells are nearer the seed
            source = {"A": b_only, "B": a_only, "neutral": a_only | b_only}[label]
            stop = start + region["cells"]
            assert source[rr[start:stop], rc[start:stop]].all()  # copies from the other entity only
            start = stop
        assert start == m.target_cells.size
        assert not all(region["fitted"] for region in m.meta["regions"])  # the fallback is exercised
    again = fuse_mapping(a, b, grid, TOOLS.fuse, seed=1)
    assert again.to_dict() == fuse_mapping(a, b, grid, TOOLS.fuse, seed=1).to_dict()


# ---- distort as the method's authors: hand-derived cases -------------------------------------------
def test_strips_roll_each_line_inside_its_band_so_references_stay_in_the_part():
    # A 3 x 12-cell arm, long axis along x: 6 bands of 2 columns; every column (a line across the
    # band) is rolled circularly by its band's shift, so reference row = rows[(k - shift) mod 3].
    arm = rect(4, 7, 2, 14)
    m = distort_mapping(arm, rect(1, 11, 1, 15), GRID, TOOLS.distort, seed=5, kernel="strips")
    assert set(m.reference_cells.tolist()) <= set(GRID.cells_of(arm).tolist())
    tr, tc = GRID.rowcol(m.target_cells)
    rr, rc = GRID.rowcol(m.reference_cells)
    assert np.array_equal(tc, rc)  # lines run across the long axis: a cell's column never changes
    band_shift = {}
    for col in range(2, 14):
        on = tc == col
        assert sorted(rr[on].tolist()) == [4, 5, 6]  # a permutation of the line
        shift = {int((t - r) % 3) for t, r in zip(tr[on], rr[on])}
        assert len(shift) == 1  # one roll for the whole line
        band_shift.setdefault((col - 2) // 2, set()).update(shift)
    assert all(len(v) == 1 for v in band_shift.values())  # one roll per band
    expected = sorted(s % 3 for s in TOOLS.distort.strip_shifts)  # {0, +1, +3, -2, -3, -4} mod 3
    assert sorted(v.pop() for v in band_shift.values()) == expected


def test_permute_takes_references_only_inside_the_part():
    arm = rect(4, 7, 2, 14)
    m = distort_mapping(arm, rect(1, 11, 1, 15), GRID, TOOLS.distort, seed=9, kernel="permute")
    assert sorted(m.reference_cells.tolist()) == sorted(m.target_cells.tolist()) == GRID.cells_of(arm).tolist()


class _ScriptedNormal:
    """A generator whose Gaussian draws are given in advance (one (n, 2) block per call)."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def normal(self, loc, scale, size):
        block = np.asarray(self.blocks.pop(0), dtype=float)
        assert block.shape == size
        return block


def test_jitter_redraws_a_draw_that_leaves_the_entity():
    from tools.distort import jitter

    allowed = rect(4, 6, 4, 6)  # a 2 x 2 entity; both cells of the part are in it
    rows, cols = np.array([4, 5]), np.array([4, 5])
    # first draws: cell 0 jumps out (+3 rows), cell 1 lands on (4, 4); the redraw brings cell 0 to (4, 5)
    scripted = [[[3, 0], [-1, -1]], [[0, 1]]]
    rr, rc = jitter(rows, cols, allowed, GRID, 1.0, 10, _ScriptedNormal(scripted))
    assert (rr.tolist(), rc.tolist()) == ([4, 4], [5, 4])
    # with no redraws the cell that left keeps itself
    rr, rc = jitter(rows, cols, allowed, GRID, 1.0, 0, _ScriptedNormal(scripted[:1]))
    assert (rr.tolist(), rc.tolist()) == ([4, 4], [4, 4])
    # after 1 + jitter_redraws draws outside, the cell keeps itself
    out = [[[9, 9]]] * 3
    rr, rc = jitter(rows[:1], cols[:1], allowed, GRID, 1.0, 2, _ScriptedNormal(out))
    assert (rr.tolist(), rc.tolist()) == ([4], [4])


def test_distort_targets_moved_keeps_only_moving_cells():
    moved_only = TOOLS.distort.model_copy(update={"targets": "moved"})
    arm = rect(4, 7, 2, 14)
    m = distort_mapping(arm, rect(1, 11, 1, 15), GRID, moved_only, seed=5, kernel="strips")
    m.validate()
    assert not np.any(m.target_cells == m.reference_cells)
    assert m.target_cells.size < GRID.cells_of(arm).size
