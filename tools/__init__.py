"""The artifact toolbox: pure functions of (cell masks, seed, config) that return target → reference
token-cell mappings (``add``, ``remove``, ``distort``, ``fuse``), the plan that picks them, and
``flux/``, the engine that applies a mapping to a photo."""
