"""X-AIGD's artifact taxonomy, and the category of each of our artifacts in it.

X-AIGD ("Unveiling Perceptual Artifacts", arXiv 2601.19430) labels every annotated artifact with
one of 7 categories over 3 levels; ``CATEGORIES`` lists them in X-AIGD's order, spelled as in its
labels and metric code:

=============================== ================================ =================================
level                           category                         what X-AIGD means
=============================== ================================ =================================
Low-level Distortions           ``low-level-edge_shape``         fundamental visual irregularities:
                                ``low-level-texture``            edge misalignments, unnatural
                                ``low-level-color``              textures, wrong colours, garbled
                                ``low-level-symbol``             text and symbols
High-level Semantics            ``high-level-semantics``         abnormal object structures,
                                                                 semantic inconsistencies
Cognitive-level Counterfactuals ``cognitive-level-commonsense``  violations of commonsense or of
                                ``cognitive-level-physics``      physical laws
=============================== ================================ =================================

``xaigd_category`` maps an artifact (its tool, the distort kernel, the edited part's name) to one
category, deterministically, first matching row wins:

======== =========== =========================== ========================== =====================================
tool     kernel      edited part                 category                   why
======== =========== =========================== ========================== =====================================
any      any         writing or a symbol (text,  ``low-level-symbol``       the edit garbles characters, which
                     letter, digit, logo, ...)                              X-AIGD labels symbol whatever the tool
add      –           any                         ``high-level-semantics``   an extra finger / ear / wheel: the
                                                                            part count is wrong, pixels are clean
remove   –           any                         ``high-level-semantics``   a missing part: abnormal structure;
                                                                            the filled area is plausible texture
fuse     –           two entities                ``high-level-semantics``   two instances melted into one body:
                                                                            where one object ends is inconsistent
distort  ``permute`` any                         ``low-level-texture``      the part's cells shuffled in place: a
                                                                            patchwork surface, the outline kept
distort  ``jitter``  any                         ``low-level-edge_shape``   cells displaced locally: a wavy,
                                                                            broken outline
distort  ``strips``  any                         ``low-level-edge_shape``   bands shifted sideways: edges no
                                                                            longer line up
distort  other/none  any                         ``low-level-edge_shape``   a warped part, kernel unrecorded
======== =========== =========================== ========================== =====================================

Our tools re-render geometry only, so ``low-level-color`` and both cognitive-level categories never
occur in our shards (``PRODUCED`` lists the ones that do); a detector trained on them still has
seven outputs, so its scores line up with X-AIGD's category-specific metrics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shards.record import ARTIFACT_TOOLS, Artifact

LEVELS: dict[str, str] = {
    "low-level": "Low-level Distortions",
    "high-level": "High-level Semantics",
    "cognitive-level": "Cognitive-level Counterfactuals",
}


@dataclass(frozen=True)
class Category:
    name: str  # as X-AIGD spells it in its labels
    level: str  # a key of ``LEVELS``
    title: str  # short display name


CATEGORIES: tuple[Category, ...] = (
    Category("low-level-edge_shape", "low-level", "Edge & Shape"),
    Category("low-level-texture", "low-level", "Texture"),
    Category("low-level-color", "low-level", "Color"),
    Category("low-level-symbol", "low-level", "Symbol"),
    Category("high-level-semantics", "high-level", "Semantics"),
    Category("cognitive-level-commonsense", "cognitive-level", "Commonsense"),
    Category("cognitive-level-physics", "cognitive-level", "Physics"),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
_BY_NAME = {c.name: c for c in CATEGORIES}

TOOL_CATEGORY: dict[str, str] = {
    "add": "high-level-semantics",
    "remove": "high-level-semantics",
    "fuse": "high-level-semantics",
    "distort": "low-level-edge_shape",
}
DISTORT_KERNEL_CATEGORY: dict[str, str] = {
    "permute": "low-level-texture",
    "jitter": "low-level-edge_shape",
    "strips": "low-level-edge_shape",
}
SYMBOL_CATEGORY = "low-level-symbol"
# Part names that are writing or symbols (whole words, singular; a plural "s" is dropped).
SYMBOL_WORDS = frozenset({"text", "letter", "lettering", "word", "writing", "handwriting", "inscription",
                          "caption", "digit", "number", "numeral", "character", "glyph", "logo", "symbol",
                          "signage", "font"})
PRODUCED: tuple[str, ...] = tuple(name for name in CATEGORY_NAMES if name in {
    SYMBOL_CATEGORY, *TOOL_CATEGORY.values(), *DISTORT_KERNEL_CATEGORY.values()})


def category(name: str) -> Category:
    """The X-AIGD category called ``name``; an unknown name is an error listing the seven."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown X-AIGD category {name!r}; choose one of {CATEGORY_NAMES}") from None


def category_index(name: str) -> int:
    """Position of ``name`` in ``CATEGORY_NAMES`` (a class index for a 7-way head)."""
    return CATEGORY_NAMES.index(category(name).name)


def is_symbol(part: str) -> bool:
    """Whether a part / entity name names writing or a symbol ("text", "street letters", "logo")."""
    words = re.findall(r"[a-z]+", part.lower())
    return any(w in SYMBOL_WORDS or (w.endswith("s") and w[:-1] in SYMBOL_WORDS) for w in words)


def xaigd_category(tool: str, kernel: str | None = None, entity: str = "", subentity: str | None = None) -> str:
    """The X-AIGD category of an artifact made by ``tool`` (module docstring's table)."""
    if tool not in TOOL_CATEGORY:
        raise ValueError(f"unknown artifact tool {tool!r}; choose one of {ARTIFACT_TOOLS}")
    if is_symbol(subentity or entity or ""):
        return SYMBOL_CATEGORY
    if tool == "distort" and kernel in DISTORT_KERNEL_CATEGORY:
        return DISTORT_KERNEL_CATEGORY[kernel]
    return TOOL_CATEGORY[tool]


def artifact_category(artifact: Artifact) -> str:
    """``xaigd_category`` of a shard's ``Artifact``."""
    return xaigd_category(artifact.tool, artifact.kernel, artifact.entity, artifact.subentity)
