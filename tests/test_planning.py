"""How the driver plans work: a photo's seeds stay together as one group in plan order, in streams and in
blocks, and the pools' sizes come from config."""

from __future__ import annotations

import pytest

from factory.config import ConfigError, load_config
from factory.plan import WorkItem, candidates, photo_blocks, plan_stream


def _items(photos: int, seeds: int) -> list[WorkItem]:
    return [WorkItem(f"{p}-{s}", f"photo{p}", s, "", group=p) for p in range(photos) for s in range(seeds)]


def test_candidates_put_a_photos_seeds_next_to_each_other():
    config = load_config("tiny", overrides={"factory.seeds_per_image": 5, "factory.seeds_together": 2})
    order = [w.source_id for w in candidates(config)]
    photos = list(dict.fromkeys(order))
    per_visit = [2, 2, 1]  # seed indices 0-1, 2-3, 4
    expected = [p for k in per_visit for p in photos for _ in range(k)]
    assert order == expected
    groups = [w.group for w in candidates(config)]
    assert groups == [g for g in range(len(per_visit) * len(photos)) for _ in range(per_visit[g // len(photos)])]
    # The same (source, seed) pairs as planning one seed of every photo at a time, but each photo group
    # is one engine batch, whose bits depend on its size: seeds_together is part of the config hash.
    one_at_a_time = load_config("tiny", overrides={"factory.seeds_per_image": 5, "factory.seeds_together": 1,
                                                   "factory.perception.batch_size": 1,
                                                   "factory.synthesis.batch_size": 1})
    assert one_at_a_time.config_hash() != config.config_hash()
    assert sorted((w.source_id, w.seed) for w in candidates(config)) == \
        sorted((w.source_id, w.seed) for w in candidates(one_at_a_time))


def test_a_stream_runs_every_open_group_whole_from_the_cursor():
    plan = _items(4, 3)
    assert plan_stream(plan, 0, set()) == plan
    # A kill committed photo 1's first seed only: its group runs whole again (the driver drops the repeat).
    finished = {w.sample_id for w in plan[:4]}
    assert plan_stream(plan, 4, finished) == [w for w in plan if w.group >= 1]
    # Photo 2 is finished (held in the reorder buffer) while photo 1 waits for a retry: it is not planned.
    finished |= {"2-0", "2-1", "2-2"}
    assert [w.group for w in plan_stream(plan, 4, finished)] == [1, 1, 1, 3, 3, 3]
    assert plan_stream(plan, 12, finished) == []


def test_blocks_never_split_a_photo():
    items = _items(3, 3)[1:]  # photo 0 lost a seed
    blocks = photo_blocks(items, rows=4)
    assert blocks == [(0, 5), (5, 8)]
    assert photo_blocks(items, rows=1) == [(0, 2), (2, 5), (5, 8)]


def test_batches_must_hold_a_photos_seeds_together():
    with pytest.raises(ConfigError, match="synthesis.batch_size .* multiple of seeds_together"):
        load_config("tiny", overrides={"factory.seeds_together": 3, "factory.perception.batch_size": 6})


def test_pools_autoscale_between_their_bounds():
    dev = load_config("flux-dev").factory
    assert dev.synthesis.min_actors == 1 and dev.synthesis.max_actors is None  # every GPU the cluster gives
    strategy = dev.synthesis.compute()
    assert strategy.min_size == 1 and strategy.max_size == float("inf")
    tiny = load_config("tiny").factory.curation.compute()
    assert tiny.min_size == tiny.max_size == 1
    with pytest.raises(ConfigError, match="max_actors .* below min_actors"):
        load_config("tiny", overrides={"factory.synthesis.min_actors": 3, "factory.synthesis.max_actors": 2})
