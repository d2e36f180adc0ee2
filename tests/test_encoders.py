"""Native encoders vs transformers' own modules on the same weights (fp32, CPU, tiny configs)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_pixels, rel_err

from omnienc.encoders import audio_output_length, chunk_features, plan_audio, plan_vision

TOL = 1e-5


def hf_vision(hf, px, grid):
    out = hf(px, torch.tensor(grid))
    return out.pooler_output, list(out.deepstack_features)


VISION_CASES = {
    "square": [[1, 8, 8]],
    "non_square": [[1, 6, 10]],
    "smallest": [[1, 2, 2]],
    "large": [[1, 36, 44]],
    "several_images": [[1, 4, 6], [1, 2, 2], [1, 10, 8], [1, 6, 6]],
    "video": [[3, 6, 8]],
    "mixed": [[1, 8, 4], [4, 4, 6], [1, 2, 2], [2, 10, 2]],
}


@pytest.mark.parametrize("grid", VISION_CASES.values(), ids=VISION_CASES.keys())
@torch.no_grad()
def test_vision_matches_hf(vision_pair, grid):
    hf, native = vision_pair
    px = random_pixels(grid, hf.config)
    ref, ref_ds = hf_vision(hf, px, grid)
    out, ds = native(px, torch.tensor(grid))
    n = px.shape[0] // 4
    assert out.shape == ref.shape == (n, hf.config.out_hidden_size)
    assert rel_err(out, ref) <= TOL
    assert len(ds) == len(ref_ds) == len(hf.config.deepstack_visual_indexes)
    for i, (a, b) in enumerate(zip(ds, ref_ds)):
        assert a.shape == b.shape == (n, hf.config.out_hidden_size), f"deepstack {i}"
        assert rel_err(a, b) <= TOL, f"deepstack {i}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_position_embeddings_in_blocks_are_bit_equal(vision_pair, monkeypatch, dtype):
    # A long request adds its position embeddings block by block (bounded memory); the result must
    # be the whole call's, bit for bit, blocks ending mid-frame included.
    import omnienc.encoders.vision as vision

    _, native = vision_pair
    native = native.to(dtype)
    grid = [[3, 6, 8], [1, 10, 8]]
    px = random_pixels(grid, native.config).to(dtype)
    whole, whole_ds = native(px, torch.tensor(grid))
    monkeypatch.setattr(vision, "POS_EMBED_BLOCK", 7)
    blocked, blocked_ds = native(px, torch.tensor(grid))
    native.float()
    assert torch.equal(whole, blocked)
    assert all(torch.equal(a, b) for a, b in zip(whole_ds, blocked_ds))


@torch.no_grad()
def test_vision_deepstack_features_differ_from_each_other_and_embeds(vision_pair):
    """Guards against returning one tensor several times: each DeepStack output is its own."""
    _, native = vision_pair
    grid = [[1, 6, 6]]
    out, ds = native(random_pixels(grid, native.config), torch.tensor(grid))
    tensors = [out, *ds]
    for i in range(len(tensors)):
        for j in range(i + 1, len(tensors)):
            assert rel_err(tensors[i], tensors[j]) > 1e-2


AUDIO_LENGTHS = [1, 37, 99, 100, 101, 777, 800, 801, 2600]


@pytest.mark.parametrize("T", AUDIO_LENGTHS)
@torch.no_grad()
def test_audio_matches_hf_alone(audio_pair, T):
    hf, native = audio_pair
    x = torch.randn(hf.config.num_mel_bins, T)
    ref = hf(x, torch.tensor([T])).last_hidden_state
    out = native(x, torch.tensor([T]))
    assert out.shape == ref.shape == (audio_output_length(T), hf.config.output_dim)
    assert rel_err(out, ref) <= TOL


@torch.no_grad()
def test_audio_several_in_one_call_match_hf_each_alone(audio_pair):
    hf, native = audio_pair
    lens = [777, 37, 100, 2600, 1, 801]
    feats = [torch.randn(hf.config.num_mel_bins, T) for T in lens]
    ref = torch.cat([hf(f, torch.tensor([f.shape[1]])).last_hidden_state for f in feats])
    out = native(torch.cat(feats, dim=1), torch.tensor(lens))
    assert out.shape == ref.shape
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("T,L", [(1, 1), (50, 7), (99, 13), (100, 13), (101, 14), (150, 20), (1000, 130), (3000, 390)])
def test_audio_output_length_table(T, L):
    """The reference's table of tokens per audio length."""
    assert audio_output_length(T) == L


@torch.no_grad()
def test_vision_batch_invariance_and_padding(vision_pair):
    """A request's outputs are the same alone, packed with others, and inside a padded bucket plan."""
    _, native = vision_pair
    grids = [[1, 4, 6], [2, 6, 2], [1, 2, 2]]
    pixels = [random_pixels([g], native.config) for g in grids]
    alone = [native(p, torch.tensor([g])) for p, g in zip(pixels, grids)]
    px = torch.cat(pixels)
    real = px.shape[0]
    plan = plan_vision(grids, 2, native.config.num_position_embeddings, num_tokens=real + 300, num_segments=12)
    assert plan.num_tokens == real + 300 and len(plan.seqlens) == 12
    padded_px = torch.cat([px, torch.randn(300, px.shape[1]) * 50])  # padding content must not matter
    packed = native.run(padded_px, plan)
    start = 0
    for (emb, ds), g in zip(alone, grids):
        n = g[0] * g[1] * g[2] // 4
        assert rel_err(packed[0][start : start + n], emb) <= TOL
        for a, b in zip(packed[1], ds):
            assert rel_err(a[start : start + n], b) <= TOL
        start += n


@torch.no_grad()
def test_audio_batch_invariance_and_padding(audio_pair):
    _, native = audio_pair
    lens = [250, 37, 100]
    feats = [torch.randn(native.config.num_mel_bins, T) for T in lens]
    alone = [native(f, [f.shape[1]]) for f in feats]
    chunks = chunk_features(torch.cat(feats, dim=1), lens, native.n_window)
    assert chunks.shape[0] == 3 + 1 + 1
    pad_chunks = torch.randn(4, *chunks.shape[1:])  # padding content must not matter
    plan = plan_audio(lens, native.n_window, native.n_window_infer, num_chunks=9, num_segments=20)
    assert plan.num_tokens == 9 * 13 and len(plan.seqlens) == 20
    out = native.run(torch.cat([chunks, pad_chunks]), plan)
    start = 0
    for a in alone:
        assert rel_err(out[start : start + a.shape[0]], a) <= TOL
        start += a.shape[0]
    assert start == plan.num_real


def test_plans_refuse_too_small_buckets():
    with pytest.raises(ValueError, match="tokens"):
        plan_vision([[1, 4, 4]], 2, 64, num_tokens=8)
    with pytest.raises(ValueError, match="segments"):
        plan_vision([[3, 2, 2]], 2, 64, num_segments=2)
    with pytest.raises(ValueError, match="chunks"):
        plan_audio([250], 50, 200, num_chunks=2)


@torch.no_grad()
def test_compiled_blocks_trace_without_breaks_and_match():
    """compile_blocks traces the per-block math in one dynamic graph (aot_eager here, inductor on GPU):
    no graph breaks, no recompiles across sizes, same numbers."""
    import torch._dynamo

    from conftest import hf_and_native_audio, hf_and_native_vision

    _, vis = hf_and_native_vision()
    _, aud = hf_and_native_audio()
    torch._dynamo.reset()
    ref_v = {}
    grids = [[[1, 4, 6]], [[2, 6, 8], [1, 2, 2]], [[1, 10, 12]]]
    pixels = [random_pixels(g, vis.config) for g in grids]
    for g, px in zip(grids, pixels):
        ref_v[str(g)] = vis(px, torch.tensor(g))[0]
    lens = [[130], [777, 40], [2600]]
    feats = [torch.randn(aud.config.num_mel_bins, sum(L)) for L in lens]
    ref_a = [aud(f, L) for f, L in zip(feats, lens)]
    vis.compile_blocks(backend="aot_eager", fullgraph=True)
    aud.compile_blocks(backend="aot_eager", fullgraph=True)
    for g, px in zip(grids, pixels):
        assert rel_err(vis(px, torch.tensor(g))[0], ref_v[str(g)]) <= TOL
    for f, L, r in zip(feats, lens, ref_a):
        assert rel_err(aud(f, L), r) <= TOL
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] <= 8, dict(counters["stats"])  # 4 functions, <= 1 recompile each


def test_attention_backends_are_validated_before_any_work():
    from omnienc.encoders.attention import resolve_backend, varlen_attention

    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, torch.float32, 72) == "sdpa"
    with pytest.raises(ValueError, match="'varlen' needs CUDA"):
        resolve_backend("varlen", cpu, torch.bfloat16, 72)
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        resolve_backend("flash", cpu, torch.float32, 72)
    q = torch.randn(5, 2, 8)
    with pytest.raises(ValueError, match="add up to 4"):
        varlen_attention(q, q, q, torch.tensor([0, 4], dtype=torch.int32), 4, [4], "sdpa")
