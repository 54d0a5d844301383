"""The engine that applies a mapping to a photo: FLUX inversion + RoPE/value injection.

The package itself imports nothing, so ``tools.flux.settings`` (part of the run's config) loads without
diffusers or torch; import ``tools.flux.engine`` and its neighbours directly."""
