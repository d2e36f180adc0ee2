"""Bucket grid: validation messages, YAML round trips, the packaged default, memory estimates."""

import pytest

from omnienc.runtime.costs import estimate_activation_bytes, estimate_flops
from omnienc.runtime.grid import AUDIO_CHUNK_FRAMES, PATCHES_PER_TOKEN, Bucket, BucketGrid, GridError, ModalityGrid

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
