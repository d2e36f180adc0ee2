"""Probe of the long-video crash and of eager memory per token (a record of what ran on the GPU).

    python benchmarks/records/long_video_probe.py CASE [ARGS]

Cases, each meant for its own process (an illegal memory access ends the process's CUDA context):
    rotary-old              the rotary kernel as it was (int32 token offsets) on 1,104,000 tokens
    rotary-new              omnienc's rotary kernel on the same tokens, checked against the torch rotary
    encoder T ROTARY FUSED  VisionEncoder on one 1280x720 video of T frame pairs (rotary triton|torch,
                            fused 1|0)
    runtime T               EncoderRuntime (default grid, captured) on that video plus one image
    memory                  peak bytes above the runtime's own of eager fallbacks, vision and audio
    kernels                 median CUDA-event times of each Triton kernel at serving shapes
Prints one JSON line per result.
"""

from __future__ import annotations

import json
import sys
import time

import torch

CUDA = torch.device("cuda")


def emit(**kw):
    print(json.dumps(kw), flush=True)


def real_vision(**options):
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeVisionEncoderConfig

    from omnienc.encoders import VisionEncoder

    with torch.device(CUDA):
        enc = VisionEncoder(Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=2048), **options)
        for p in enc.parameters():
            torch.nn.init.normal_(p, 0.0, 0.02)
    return enc.to(torch.bfloat16).eval()


def real_audio():
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig

    from omnienc.encoders import AudioEncoder

    with torch.device(CUDA):
        enc = AudioEncoder(Qwen3OmniMoeAudioEncoderConfig(output_dim=2048))
        for p in enc.parameters():
            torch.nn.init.normal_(p, 0.0, 0.02)
    return enc.to(torch.bfloat16).eval()


def old_rotary_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def rotary_kernel(qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, stride_tok, H: tl.constexpr, HALF: tl.constexpr,
                      BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        t = tl.program_id(0)  # int32, as before the fix
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        mask = (h < H) & (d < HALF)
        c = tl.load(cos_ptr + t * HALF + d, mask=d < HALF, other=0.0)
        s = tl.load(sin_ptr + t * HALF + d, mask=d < HALF, other=0.0)
        head = h * (2 * HALF)
        out = t * (H * 2 * HALF) + head + d
        for which in tl.static_range(2):
            src = qkv_ptr + t * stride_tok + which * (H * 2 * HALF) + head + d
            x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
            x2 = tl.load(src + HALF, mask=mask, other=0.0).to(tl.float32)
            dst = q_ptr if which == 0 else k_ptr
            tl.store(dst + out, (x1 * c - x2 * s).to(dst.dtype.element_ty), mask=mask)
            tl.store(dst + out + HALF, (x2 * c + x1 * s).to(dst.dtype.element_ty), mask=mask)

    return rotary_kernel


def rotary_inputs(tokens=1_104_000):
    g = torch.Generator(device=CUDA).manual_seed(0)
    qkv = torch.randn(tokens, 3 * 1152, device=CUDA, dtype=torch.bfloat16, generator=g)
    ang = torch.rand(tokens, 36, device=CUDA, generator=g) * 6.28
    return qkv, ang.cos(), ang.sin()


def case_rotary(which):
    from omnienc.encoders.rotary import rotary_qkv_torch, rotary_qkv_triton

    qkv, cos, sin = rotary_inputs()
    if which == "old":
        q, k = torch.empty(qkv.shape[0], 16, 72, device=CUDA, dtype=qkv.dtype), None
        k = torch.empty_like(q)
        old_rotary_kernel()[(qkv.shape[0],)](qkv, cos, sin, q, k, qkv.stride(0), 16, 36, 16, 64)
    else:
        q, k, _ = rotary_qkv_triton(qkv, cos, sin, 16)
    torch.cuda.synchronize()
    errs = {}
    for name, rows in (("head", slice(0, 4096)), ("tail", slice(-4096, None))):
        rq, rk, _ = rotary_qkv_torch(qkv[rows], cos[rows], sin[rows], 16)
        errs[name] = max((q[rows] - rq).abs().max().item(), (k[rows] - rk).abs().max().item())
    emit(case=f"rotary-{which}", tokens=qkv.shape[0], max_abs_err=errs)


def case_encoder(t, rotary, fused):
    from omnienc.encoders.block import UNFUSED

    opts = dict(rotary_backend=rotary)
    if fused == "0":
        opts["fusion"] = UNFUSED
    enc = real_vision(**opts)
    pixels = torch.randn(t * 46 * 80, enc.in_features, device=CUDA, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out, ds = enc(pixels, [[t, 46, 80]])
        ok = bool(torch.isfinite(out).all())
    torch.cuda.synchronize()
    emit(case="encoder", t=t, patches=t * 46 * 80, rotary=rotary, fused=fused, finite=ok,
         s=round(time.perf_counter() - t0, 2), peak_gib=round((torch.cuda.max_memory_allocated() - base) / 2**30, 2))


def runtime(vis=True, aud=True):
    from omnienc.runtime import BucketGrid, EncoderRuntime

    rt = EncoderRuntime(vision=real_vision() if vis else None, audio=real_audio() if aud else None,
                        grid=BucketGrid.default())
    rt.capture(progress=False)
    return rt


def case_runtime(t):
    from omnienc.runtime import VisionRequest

    rt = runtime(aud=False)
    in_f = rt.vision.encoder.in_features
    video = VisionRequest(torch.randn(t * 46 * 80, in_f, dtype=torch.bfloat16), torch.tensor([[t, 46, 80]]))
    image = VisionRequest(torch.randn(32 * 32, in_f, dtype=torch.bfloat16), torch.tensor([[1, 32, 32]]))
    t0 = time.perf_counter()
    res = rt.launch([video, image]).results()
    torch.cuda.synchronize()
    emit(case="runtime", t=t, patches=t * 46 * 80, s=round(time.perf_counter() - t0, 2),
         results=[type(r).__name__ if isinstance(r, BaseException) else "ok" for r in res],
         error=next((str(r)[:300] for r in res if isinstance(r, BaseException)), None),
         eager_attention=rt.stats()["vision"].get("eager_attention"))


def case_memory():
    from omnienc.runtime import AudioRequest, VisionRequest

    rt = runtime()
    in_f = rt.vision.encoder.in_features
    cases = [("vision", (t, 46, 80)) for t in (2, 4, 8, 30)] + [("vision", (1, 146, 146)), ("vision", (1, 200, 200))]
    cases += [("audio", s) for s in (300, 1800)]
    for kind, size in cases:
        if kind == "vision":
            n = size[0] * size[1] * size[2]
            req, units = VisionRequest(torch.randn(n, in_f, dtype=torch.bfloat16), torch.tensor([list(size)])), n
        else:
            frames = size * 100
            req, units = AudioRequest(torch.randn(128, frames), torch.tensor([frames])), frames
        for _ in range(2):  # the second run: the allocator's cache and cuDNN plans are warm
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            res = rt.launch([req]).results()
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() - base
            del res
        enc = rt.vision.encoder if kind == "vision" else rt.audio.encoder
        estimate = None
        if hasattr(enc, "activation_bytes"):  # the estimate, where this tree has one (inputs' copy added)
            if kind == "vision":
                estimate = enc.activation_bytes(units) + units * enc.in_features * 2
            else:
                estimate = enc.activation_bytes(units // 100) + units * 128 * 2
        emit(case="memory", kind=kind, size=size, units=units, s=round(dt, 3), peak_gib=round(peak / 2**30, 3),
             bytes_per_unit=round(peak / units), estimate_over_peak=estimate and round(estimate / peak, 3),
             eager_attention=rt.stats()[kind].get("eager_attention"))


def median_ms(fn, reps=50):
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def case_kernels():
    from omnienc.encoders.ops.add_layernorm import add_layernorm_triton
    from omnienc.encoders.ops.audio_front import bias_gelu_mask_triton
    from omnienc.encoders.ops.finite import row_flags_triton
    from omnienc.encoders.ops.linear_gelu import bias_gelu_triton
    from omnienc.encoders.rotary import rotary_qkv_triton

    r = {}
    for n in (4320, 36800):
        qkv, cos, sin = rotary_inputs(n)
        r[f"rotary_{n}"] = median_ms(lambda: rotary_qkv_triton(qkv, cos, sin, 16))
        x, y = torch.randn(2, n, 1152, device=CUDA, dtype=torch.bfloat16)
        w, b = torch.randn(2, 1152, device=CUDA, dtype=torch.bfloat16)
        r[f"add_layernorm_{n}"] = median_ms(lambda: add_layernorm_triton(x, y, None, w, b, 1e-6))
        y4 = torch.randn(n, 4304, device=CUDA, dtype=torch.bfloat16)
        b4 = torch.randn(4304, device=CUDA, dtype=torch.bfloat16)
        r[f"bias_gelu_{n}"] = median_ms(lambda: bias_gelu_triton(y4, b4, "tanh"))
        st = torch.randn(4, n // 4, 2048, device=CUDA, dtype=torch.bfloat16)
        r[f"row_flags_{n}"] = median_ms(lambda: row_flags_triton(st))
    y = torch.randn(24, 64, 50, 480, device=CUDA, dtype=torch.bfloat16).permute(0, 3, 1, 2)  # channels-last
    bias = torch.randn(480, device=CUDA, dtype=torch.bfloat16)
    valid = torch.full((24,), 50, device=CUDA, dtype=torch.int64)
    r["audio_epilogue_24"] = median_ms(lambda: bias_gelu_mask_triton(y, bias, valid))
    import omnienc

    emit(case="kernels", tree=omnienc.__file__, ms={k: round(v, 4) for k, v in r.items()})


if __name__ == "__main__":
    name, args = sys.argv[1], sys.argv[2:]
    if name.startswith("rotary-"):
        case_rotary(name.split("-", 1)[1])
    elif name == "encoder":
        case_encoder(int(args[0]), args[1], args[2])
    elif name == "runtime":
        case_runtime(int(args[0]))
    elif name == "memory":
        case_memory()
    elif name == "kernels":
        case_kernels()
    else:
        raise SystemExit(f"unknown case {name!r}")
