"""GPU tests of sizes past int32 offsets and of failures for size (marked ``gpu``; skipped without
CUDA). Real encoder sizes, random bf16 weights; each test frees what it made, since these sizes
take tens of GiB.
"""

from __future__ import annotations

import gc

import pytest
import torch
from conftest import randomize_, rel_err

from omnienc.encoders import AudioEncoder, VisionEncoder

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _free():
    gc.collect()
    torch.cuda.empty_cache()


def real_vision():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeVisionEncoderConfig

    cfg = Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=2048)
    with torch.device(CUDA):
        return randomize_(VisionEncoder(cfg)).to(torch.bfloat16).eval()


def real_audio():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig

    cfg = Qwen3OmniMoeAudioEncoderConfig(output_dim=2048)
    with torch.device(CUDA):
        return randomize_(AudioEncoder(cfg)).to(torch.bfloat16).eval()


@torch.inference_mode()
def test_video_past_int32_offsets_equals_its_halves():
    # 300 frame pairs of 1280x720: 1,104,000 patches, so the fused q/k/v projection [n, 3 * 1152]
    # holds 3.8e9 elements. Frame pairs are separate attention segments and position and rotary
    # embeddings repeat per frame, so each half encoded alone must give the same rows.
    _free()  # what earlier tests' runtimes left in the allocator's cache
    enc = real_vision()
    t, h, w = 300, 46, 80
    free, total = torch.cuda.mem_get_info()
    if free < 60 * 2**30:
        pytest.skip(f"needs ~60 GiB free for the whole video, {free / 2**30:.0f} GiB free")
    pixels = torch.randn(t * h * w, enc.in_features, device=CUDA, dtype=torch.bfloat16)
    whole, whole_ds = enc(pixels, [[t, h, w]])
    torch.cuda.synchronize()
    half = t // 2 * h * w
    parts = [enc(pixels[:half], [[t // 2, h, w]]), enc(pixels[half:], [[t - t // 2, h, w]])]
    halves = torch.cat([p[0] for p in parts])
    halves_ds = [torch.cat([p[1][i] for p in parts]) for i in range(len(whole_ds))]
    assert whole.shape == halves.shape == (t * h * w // 4, 2048)
    assert torch.isfinite(whole).all()
    # same bf16 math on other GEMM row counts: only rounding may differ
    for a, b in [(whole, halves), *zip(whole_ds, halves_ds)]:
        assert rel_err(a, b) < 1e-2
    # the last frames, whose offsets lie past 2**31 in q/k/v, match as closely as the first
    tail = slice(-h * w // 4, None)
    assert rel_err(whole[tail], halves[tail]) < 1e-2
    del enc, pixels, whole, whole_ds, parts, halves, halves_ds
    _free()


@torch.inference_mode()
def test_runtime_serves_after_a_request_failed_for_its_size():
    """A 4-minute 720p video, cut (the default), runs within what its outputs and the bound need;
    in that room plus 1 GiB, uncut (``split_requests=False``: one eager forward, whose memory grows
    with the length, several times the cut run's at this length) it fails alone and its runtime
    goes on serving. The inputs are on the GPU before the room is set."""
    from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest

    vis, aud = real_vision(), real_audio()
    cut = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default())
    cut.capture(progress=False)
    rt = EncoderRuntime(vision=vis, audio=aud, grid=BucketGrid.default(),
                        config=RuntimeConfig(split_requests=False, max_transient_bytes=2**40))
    rt.capture(progress=False)
    t = 240  # frame pairs: 4 minutes at 2 fps
    big = VisionRequest(torch.randn(t * 46 * 80, vis.in_features, dtype=torch.bfloat16, device=CUDA),
                        torch.tensor([[t, 46, 80]]))
    image = VisionRequest(torch.randn(28 * 28, vis.in_features, dtype=torch.bfloat16), torch.tensor([[1, 28, 28]]))
    clip = AudioRequest(torch.randn(128, 1000), torch.tensor([1000]))
    _free()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    outs = cut.launch([big, image]).results()
    torch.cuda.synchronize()
    assert not any(isinstance(o, Exception) for o in outs), outs
    cut_need = torch.cuda.max_memory_allocated() - base  # outputs included
    del outs
    room = cut_need + 2**30
    total = torch.cuda.get_device_properties(CUDA).total_memory
    _free()  # the room counted from what is held once the allocator's cache is handed back
    held = torch.cuda.memory_reserved()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (held + room) / total))
    torch.cuda.reset_peak_memory_stats()
    try:
        out = rt.launch([big, image]).results()
        reserved = torch.cuda.max_memory_reserved()
        whole = cut.launch([big, image]).results()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert isinstance(out[0], RuntimeError) and "request 0" in str(out[0]), \
        (f"cut need {cut_need / 2**30:.2f} GiB; held {held / 2**30:.2f} GiB, room {room / 2**30:.2f} GiB; "
         f"reserved at most {reserved / 2**30:.2f} GiB: {out[0]}")
    assert whole[0].embeds.shape == (t * 46 * 80 // 4, vis.config.out_hidden_size)
    assert torch.isfinite(whole[0].embeds).all()
    del whole, cut, big
    ref, ref_ds = vis(image.pixel_values.to(CUDA), image.grid_thw)
    assert rel_err(out[1].embeds, ref) < 3e-2
    # The context is intact: a normal batch afterwards is served correctly.
    out = rt.encode([image, clip])
    torch.cuda.synchronize()
    assert rel_err(out[0].embeds, ref) < 3e-2
    for a, b in zip(out[0].deepstack, ref_ds):
        assert rel_err(a, b) < 3e-2
    assert rel_err(out[1].embeds, aud(clip.input_features.to(CUDA), clip.feature_lens)) < 3e-2
    del rt, vis, aud
    _free()
