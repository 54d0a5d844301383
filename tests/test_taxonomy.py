"""X-AIGD's taxonomy as its labels spell it, and the documented, deterministic mapping of our artifacts."""

from __future__ import annotations

import pytest

from shards.record import ARTIFACT_TOOLS, Artifact
from shards.taxonomy import (CATEGORIES, CATEGORY_NAMES, LEVELS, PRODUCED, artifact_category, category,
                             category_index, is_symbol, xaigd_category)
from tools.distort import KERNELS

# X-AIGD's seven label names, in its own order, and its three levels.
XAIGD = ("low-level-edge_shape", "low-level-texture", "low-level-color", "low-level-symbol",
         "high-level-semantics", "cognitive-level-commonsense", "cognitive-level-physics")


def test_the_seven_categories_over_three_levels_as_xaigd_spells_them():
    assert CATEGORY_NAMES == XAIGD
    assert list(LEVELS.values()) == ["Low-level Distortions", "High-level Semantics", "Cognitive-level Counterfactuals"]
    assert [sum(c.level == level for c in CATEGORIES) for level in LEVELS] == [4, 1, 2]
    assert all(c.name.startswith(c.level + "-") for c in CATEGORIES)
    assert [category_index(n) for n in XAIGD] == list(range(7)) and category("low-level-color").title == "Color"
    with pytest.raises(ValueError, match="low-level-edge_shape"):
        category("low-level-edge-shape")


@pytest.mark.parametrize("tool, kernel, entity, subentity, expected", [
    ("add", None, "person", "hand", "high-level-semantics"),
    ("remove", None, "cat", "ear", "high-level-semantics"),
    ("fuse", None, "cat+dog", None, "high-level-semantics"),
    ("distort", "permute", "person", "arm", "low-level-texture"),
    ("distort", "jitter", "horse", "leg", "low-level-edge_shape"),
    ("distort", "strips", "car", "door", "low-level-edge_shape"),
    ("distort", None, "bird", "neck", "low-level-edge_shape"),
    ("distort", "swirl", "bird", "neck", "low-level-edge_shape"),
    ("distort", "permute", "shop sign", "text", "low-level-symbol"),
    ("add", None, "license plate", "digits", "low-level-symbol"),
    ("remove", None, "poster", "Letters", "low-level-symbol"),
    ("fuse", None, "logo+logo", None, "low-level-symbol"),
    ("distort", "permute", "sofa", "texture", "low-level-texture"),  # "texture" is not "text"
])
def test_mapping_table(tool, kernel, entity, subentity, expected):
    assert xaigd_category(tool, kernel, entity, subentity) == expected
    artifact = Artifact(tool=tool, kernel=kernel, entity=entity, subentity=subentity)
    assert artifact_category(artifact) == expected


def test_every_artifact_maps_to_one_category_deterministically():
    parts = ("hand", "leg", "wheel", "text", "", "cat+dog")
    seen = {xaigd_category(t, k, "entity", p) for t in ARTIFACT_TOOLS for k in (None, *KERNELS) for p in parts}
    assert seen == set(PRODUCED) and seen <= set(CATEGORY_NAMES)
    assert set(PRODUCED) == {"low-level-edge_shape", "low-level-texture", "low-level-symbol", "high-level-semantics"}
    assert [xaigd_category("distort", "permute", "person", "arm") for _ in range(3)] == ["low-level-texture"] * 3


def test_symbol_words_are_whole_words():
    assert is_symbol("text") and is_symbol("street letters") and is_symbol("Logo") and is_symbol("numbers")
    assert not is_symbol("texture") and not is_symbol("context") and not is_symbol("hand") and not is_symbol("")


def test_an_unknown_tool_is_an_error_naming_ours():
    with pytest.raises(ValueError, match="distort"):
        xaigd_category("inpaint")
