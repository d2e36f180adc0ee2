"""Bucket grid: validation messages, bounds, duplicate keys, YAML round trips, the packaged default,
memory estimates."""

import random

import pytest

from omnienc.runtime.costs import estimate_activation_bytes, estimate_flops
from omnienc.runtime.grid import (
    AUDIO_CHUNK_FRAMES, MAX_SIZE, PATCHES_PER_TOKEN, Bucket, BucketGrid, GridError, ModalityGrid, check_int,
)
from omnienc.runtime.packing import audio_demand, pack, vision_demand

V = {"patches": [1024, 4096], "batch": [1, 4]}
A = {"frames": [800, 3200], "batch": [1, 8]}

# (config, substrings the message must contain: what is wrong and how to fix it)
INVALID = {
    "frames not x100": (
        {"audio": {"frames": [1050], "batch": [1]}}, ["multiple of 100", "use 1000 or 1100"]),
    "patches not x4": (
        {"vision": {"patches": [1022], "batch": [1]}}, ["multiple of 4", "use 1020 or 1024"]),
    "patches < 4": (
        {"vision": {"patches": [2], "batch": [1]}}, ["cannot hold one item", "at least 4"]),
    "frames < 100": (
        {"audio": {"frames": [0], "batch": [1]}}, ["cannot hold one item", "at least 100"]),
    "batch < 1": ({"vision": {"patches": [4], "batch": [0]}}, ["vision.batch[0]", "at least 1"]),
    "duplicate size": (
        {"vision": {"patches": [8, 8], "batch": [1]}}, ["listed twice", "remove the duplicate"]),
    "duplicate batch": (
        {"audio": {"frames": [100], "batch": [2, 2]}}, ["listed twice", "remove the duplicate"]),
    "duplicate explicit": (
        {"vision": {"buckets": [{"patches": 8, "batch": 1}, {"patches": 8, "batch": 1}]}},
        ["listed twice", "remove the duplicate"]),
    "unknown top key": (
        {"visoin": V}, ["unknown top-level key", "'visoin'", "allowed: 'dtype', 'vision', 'audio'"]),
    "unknown modality key": (
        {"vision": V | {"size": [4]}}, ["vision: unknown key", "allowed: 'patches'"]),
    "audio uses frames": ({"audio": {"patches": [100], "batch": [1]}}, ["unknown key", "'frames'"]),
    "empty sizes": ({"vision": {"patches": [], "batch": [1]}}, ["empty list", "give at least one"]),
    "empty buckets": ({"audio": {"buckets": []}}, ["empty list", "give at least one bucket"]),
    "lists and buckets": (
        {"vision": V | {"buckets": [{"patches": 4, "batch": 1}]}}, ["not both", "remove one"]),
    "missing batch": ({"vision": {"patches": [4]}}, ["missing 'batch'", "give both"]),
    "string size": (
        {"vision": {"patches": ["1024"], "batch": [1]}}, ["not an integer", "positive integer"]),
    "float size": (
        {"audio": {"frames": [100.0], "batch": [1]}}, ["not an integer", "positive integer"]),
    "bool batch": ({"vision": {"patches": [4], "batch": [True]}}, ["boolean", "positive integer"]),
    "scalar list": ({"vision": {"patches": 1024, "batch": [1]}}, ["expected a list"]),
    "unknown dtype": ({"dtype": "fp8", "vision": V}, ["unknown dtype", "use one of"]),
    "modality not a mapping": ({"vision": [1024]}, ["expected a mapping", "write e.g."]),
    "bad explicit bucket": (
        {"audio": {"buckets": [{"frames": 100}]}}, ["exactly the keys 'frames' and 'batch'"]),
    "explicit bucket bad size": (
        {"audio": {"buckets": [{"frames": 150, "batch": 1}]}},
        ["audio.buckets[0].frames", "use 100 or 200"]),
    "top level not a mapping": ([1, 2], ["expected a mapping"]),
    "explicit batch beyond its size": (
        {"audio": {"buckets": [{"frames": 200, "batch": 3}]}},
        ["audio.buckets[0]", "cannot fit in 200 frames", "at least 100 frames", "use batch <= 2 or frames >= 300"]),
    "listed batch beyond every size": (
        {"vision": {"patches": [8, 16], "batch": [1, 5]}},
        ["vision.batch[1]", "cannot fit in 16 patches (the largest size listed)", "use batch <= 4 or patches >= 20"]),
    "absurd batch": ({"vision": {"patches": [1024], "batch": [10**9]}}, ["cannot fit in 1024 patches"]),
    "absurd patches": (
        {"vision": {"patches": [10**9], "batch": [1]}},
        ["vision.patches[0]", "above the largest bucket size, 262144", "use at most 262144", "run eagerly"]),
    "frames above the bound": (
        {"audio": {"buckets": [{"frames": 204_900, "batch": 1}]}}, ["audio.buckets[0].frames", "at most 204800"]),
}


@pytest.mark.parametrize("config, parts", INVALID.values(), ids=INVALID.keys())
def test_invalid_config(config, parts):
    with pytest.raises(GridError) as e:
        BucketGrid.from_dict(config)
    for part in parts:
        assert part in str(e.value)


def test_grid_error_is_value_error():
    assert issubclass(GridError, ValueError)


def test_cross_product_and_properties():
    g = BucketGrid.from_dict({"vision": V, "audio": A})
    assert g.vision.buckets == (Bucket(1024, 1), Bucket(1024, 4), Bucket(4096, 1), Bucket(4096, 4))
    assert g.num_graphs == 8 and g.dtype == "bfloat16"
    assert (g.audio.max_size, g.audio.max_batch) == (3200, 8)


def test_explicit_buckets_sorted_and_max_from_different_buckets():
    g = BucketGrid.from_dict({"vision": {"buckets": [
        {"patches": 4096, "batch": 1}, {"patches": 1024, "batch": 16}]}})
    assert g.vision.buckets == (Bucket(1024, 16), Bucket(4096, 1))
    assert (g.vision.max_size, g.vision.max_batch) == (4096, 16)
    assert g.audio is None and g.num_graphs == 2


def test_missing_modality_runs_eagerly():
    g = BucketGrid.from_dict({"dtype": "float16", "audio": A, "vision": None})
    assert g.vision is None and g.modality("vision") is None
    assert "vision" not in g.to_dict()


@pytest.mark.parametrize(
    "config",
    [
        {"dtype": "float32", "vision": V, "audio": A},
        {"vision": {"buckets": [{"patches": 1024, "batch": 1}, {"patches": 4096, "batch": 16}]}},
        {"audio": {"buckets": [{"frames": 100, "batch": 1}, {"frames": 12800, "batch": 32}]}},
        {},
    ],
)
def test_yaml_round_trip(config, tmp_path):
    g = BucketGrid.from_dict(config)
    path = tmp_path / "grid.yaml"
    text = g.to_yaml(path, header="made for a test\nsecond line")
    assert path.read_text() == text and text.startswith("# made for a test\n# second line\n")
    assert BucketGrid.from_yaml(path) == g
    assert BucketGrid.from_dict(g.to_dict()) == g


def test_to_dict_form():
    cross = BucketGrid.from_dict({"vision": V}).to_dict()["vision"]
    assert cross == {"patches": [1024, 4096], "batch": [1, 4]}
    explicit = BucketGrid(vision=ModalityGrid("vision", (Bucket(8, 1), Bucket(16, 2)))).to_dict()
    assert explicit["vision"] == {"buckets": [{"patches": 8, "batch": 1}, {"patches": 16, "batch": 2}]}


def test_from_yaml_errors(tmp_path):
    with pytest.raises(GridError, match="not found; pass an existing YAML file"):
        BucketGrid.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("vision: [patches: 1\n")
    with pytest.raises(GridError, match="invalid YAML.*fix the syntax"):
        BucketGrid.from_yaml(bad)
    bad.write_text("vision:\n  patches: [1000]\n  batch: [1]\nextra: 1\n")
    with pytest.raises(GridError, match=r"bad\.yaml: unknown top-level key"):
        BucketGrid.from_yaml(bad)


def test_modality_grid_direct():
    with pytest.raises(GridError, match="use 'vision' or 'audio'"):
        ModalityGrid("text", (Bucket(4, 1),))
    with pytest.raises(GridError, match="leave 'audio' out"):
        ModalityGrid("audio", ())
    with pytest.raises(GridError, match="pass a vision grid"):
        BucketGrid(vision=ModalityGrid("audio", (Bucket(100, 1),)))


def test_default_grid():
    g = BucketGrid.default()
    assert 0 < g.num_graphs <= 32 and g.dtype == "bfloat16"  # a few seconds of capture, well under 2 GiB
    assert 12000 <= g.vision.max_size <= 20000 and 10000 <= g.audio.max_size <= 16000
    assert all(b.size % PATCHES_PER_TOKEN == 0 for b in g.vision.buckets)
    assert all(b.size % AUDIO_CHUNK_FRAMES == 0 for b in g.audio.buckets)
    sizes = [b.size for b in g.vision.buckets]
    for need in (196, 784, 3520, 3680, 6272):  # typical sizes fit without running eagerly
        assert max(sizes) >= need
    assert 784 in sizes  # one 448x448 image, the commonest request, replays without padding


def test_activation_estimate():
    v = estimate_activation_bytes("vision", Bucket(16384, 16))
    a = estimate_activation_bytes("audio", Bucket(12800, 32))
    assert 0.3e9 < v < 1.5e9 and 0.3e9 < a < 2e9  # well under an 80 GB card
    assert estimate_activation_bytes("vision", Bucket(8192, 16)) < v
    assert estimate_activation_bytes("audio", Bucket(12800, 32), "float32") > 1.9 * a
    chunk = estimate_activation_bytes("audio", Bucket(200, 1))
    assert estimate_activation_bytes("audio", Bucket(150, 1)) == chunk  # whole 100-frame chunks
    with pytest.raises(GridError):
        estimate_activation_bytes("text", Bucket(4, 1))
    assert 3 < estimate_flops("vision", 1) / estimate_flops("audio", 1) < 6


def test_graphs_up_to_round_trip_and_counts(tmp_path):
    g = BucketGrid.from_dict({"vision": {"patches": [256, 1024, 4096], "batch": [1, 4], "graphs_up_to": 1024},
                              "audio": {"buckets": [{"frames": 800, "batch": 2}], "graphs_up_to": 400}})
    assert g.num_graphs == 4  # vision 256x1, 256x4, 1024x1, 1024x4; audio 800 > 400: eager
    assert [b.size for b in g.vision.graph_buckets] == [256, 256, 1024, 1024]
    assert not g.vision.is_graph(Bucket(4096, 1)) and g.vision.is_graph(Bucket(1024, 4))
    assert g.audio.graph_buckets == ()
    path = tmp_path / "g.yaml"
    g.to_yaml(path)
    assert BucketGrid.from_yaml(path) == g
    assert "graphs_up_to: 1024" in path.read_text()
    assert BucketGrid.default().vision.graphs_up_to == 3000 and BucketGrid.default().audio.graphs_up_to is None


@pytest.mark.parametrize("value, fragment", [(0, "positive"), (-5, "positive"), ("big", "not an integer"),
                                             (True, "boolean"), (1.5, "not an integer")])
def test_graphs_up_to_validation(value, fragment):
    with pytest.raises(GridError, match="graphs_up_to") as e:
        BucketGrid.from_dict({"vision": {"patches": [256], "batch": [1], "graphs_up_to": value}})
    assert fragment in str(e.value)


def test_sizes_up_to_the_bound_are_accepted():
    g = BucketGrid.from_dict({"vision": {"buckets": [{"patches": MAX_SIZE["vision"], "batch": 16}]},
                              "audio": {"frames": [MAX_SIZE["audio"]], "batch": [MAX_SIZE["audio"] // 100]}})
    assert g.vision.max_size == MAX_SIZE["vision"] and g.audio.max_batch == MAX_SIZE["audio"] // 100


def test_a_bucket_built_in_code_is_bounded_too():
    with pytest.raises(GridError, match=r"audio bucket \{frames: 100, batch: 2\}: batch 2 cannot fit"):
        ModalityGrid("audio", (Bucket(100, 2),))
    with pytest.raises(GridError, match="above the largest bucket size"):
        ModalityGrid("vision", (Bucket(MAX_SIZE["vision"] + 4, 1),))


@pytest.mark.parametrize("modality", ["vision", "audio"])
def test_cross_product_caps_each_batch_at_what_its_size_holds_and_packs_the_same(modality):
    """Capping changes no packing decision: no mix of requests fits a size with more segments than
    size / unit, so the capped grid and the raw cross product pack every request stream alike."""
    rng = random.Random()
    unit = PATCHES_PER_TOKEN if modality == "vision" else AUDIO_CHUNK_FRAMES
    key = "patches" if modality == "vision" else "frames"
    sizes = sorted(rng.sample(range(1, 40), 4))
    sizes = [s * unit for s in sizes]
    batches = sorted(rng.sample(range(1, sizes[-1] // unit + 1), min(3, sizes[-1] // unit)))
    grid = ModalityGrid.from_dict(modality, {key: sizes, "batch": batches})
    assert set(grid.buckets) == {Bucket(s, min(b, s // unit)) for s in sizes for b in batches}
    raw = [Bucket(s, b) for s in sizes for b in batches]
    for _ in range(20):
        if modality == "vision":
            demands = [vision_demand([(rng.randint(1, 3), 2 * rng.randint(1, 4), 2 * rng.randint(1, 4))])
                       for _ in range(rng.randint(1, 12))]
        else:
            demands = [audio_demand([rng.randint(1, 900) for _ in range(rng.randint(1, 3))])
                       for _ in range(rng.randint(1, 12))]
        capped, uncapped = pack(demands, grid.buckets), pack(demands, raw)
        assert [(r.members, r.bucket and r.bucket.size) for r in capped] == \
               [(r.members, r.bucket and r.bucket.size) for r in uncapped]
    assert BucketGrid.from_dict(BucketGrid(**{modality: grid}).to_dict()).modality(modality) == grid


DUPLICATES = {
    "top level": ("dtype: bfloat16\nvision: {patches: [8], batch: [1]}\ndtype: float16\n", "'dtype'", 3, 1),
    "in a modality": ("vision:\n  patches: [8]\n  batch: [1]\n  patches: [16]\n", "'patches'", 4, 2),
    "flow mapping": ("audio: {frames: [100], batch: [1], frames: [200]}\n", "'frames'", 1, 1),
    "explicit bucket": ("audio:\n  buckets:\n  - {frames: 100, batch: 1, batch: 1}\n", "'batch'", 3, 3),
}


@pytest.mark.parametrize("text, key, line, first", DUPLICATES.values(), ids=DUPLICATES.keys())
def test_duplicate_yaml_keys_are_refused_naming_file_key_and_line(tmp_path, text, key, line, first):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(GridError, match=rf"dup\.yaml: line {line}, column \d+: key {key} is given twice "
                                        rf"\(first at line {first}\); remove one"):
        BucketGrid.from_yaml(path)


def test_a_merge_key_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("vision:\n  <<: {patches: [8], batch: [1]}\n  batch: [2]\n")
    assert BucketGrid.from_yaml(path).vision.buckets == (Bucket(8, 2),)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# grille par défaut\nvision: {patches: [8], batch: [1]}\n".encode("latin-1"))
    with pytest.raises(GridError, match=r"latin1\.yaml'?: not UTF-8 text \(byte 0xe9 at offset \d+\); save it as UTF-8"):
        BucketGrid.from_yaml(path)


@pytest.mark.parametrize("error", [GridError, ValueError])
def test_check_int_is_the_one_integer_check(error):
    import numpy as np
    import torch

    n = random.randint(1, 10**6)
    assert check_int("x", n) == check_int("x", np.int64(n)) == check_int("x", torch.tensor(n)) == n
    for value, why in ((True, "is a boolean; write a positive integer"), (2.0, "is not an integer"),
                       ("3", "is not an integer"), (0, "0 must be >= 1")):
        with pytest.raises(error, match=why) as e:
            check_int("where", value, 1, error)
        assert type(e.value) is error and str(e.value).startswith("where: ")
