"""``omnienc.preprocess`` against transformers' own processors, on real media shipped in packages.

Media: photos and an animated GIF from scikit-image's wheel (``skimage/data``: RGB, grayscale "L" and
RGBA images of several sizes), speech from auditok 0.2.0's wheel (``auditok/data``: 16 kHz and
44.1 kHz recordings), WAV files of unusual formats from scipy's tests. Nothing is generated here
except crops, stacks and sums of those.

Bounds: ``grid_thw`` identical; ``pixel_values`` within max abs 0.1 and mean abs 0.003 of
``Qwen2VLImageProcessorPil``; log-mel within 2e-3 (max abs) of ``WhisperFeatureExtractor`` as
``Qwen3OmniMoeProcessor`` calls it; features of resampled audio within 0.02 (mean abs) of features of
the same audio resampled by ``scipy.signal.resample_poly``. The parity tests run on the CPU and, marked
``gpu``, on CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision, rel_err, tiny_audio_config, tiny_vision_config

from omnienc.preprocess import (
    PreprocessConfig,
    preprocess_many,
    make_feature_extractor,
    make_image_processor,
    mel_filter_bank,
    patchify_frames,
    preprocess_images,
    preprocess_video,
    preprocess_waveforms,
    read_audio,
    resample,
    sample_video_indices,
    smart_resize,
    whisper_features,
)
from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, VisionRequest

Image = pytest.importorskip("PIL.Image")

MAX_ABS, MEAN_ABS = 0.1, 0.003  # pixel_values after normalization
MEL_MAX_ABS = 2e-3
RESAMPLE_MEAN_ABS = 0.02
ENCODER_TOL = 1e-5  # the encoders' fp32 parity bound (tests/test_encoders.py)
VISION_TOL = 3e-4  # see test_requests_encode_like_transformers_inputs
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def package_data(package: str, sub: str) -> Path:
    """A data folder inside an installed package (the ``dev`` extra installs them)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install -e '.[dev]')")
    return Path(spec.submodule_search_locations[0]) / sub


def photo(name: str):
    with Image.open(package_data("skimage", "data") / name) as im:
        im.load()
        return im.copy()


def speech(name: str) -> tuple[np.ndarray, int]:
    """Mono float32 samples of an auditok recording, and its rate."""
    x, rate, _ = read_audio(package_data("auditok", "data") / name)
    return x[0], rate


SPEECH_16K = "1to6arabic_16000_mono_bc_noise.wav"
SPEECH_44K = "was_der_mensch_saet_das_wird_er_vielfach_ernten_44100Hz_mono_lead_trail_silence.wav"


def assert_pixels_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    diff = (ours.detach().cpu().double() - ref.double()).abs()
    assert diff.max().item() <= MAX_ABS and diff.mean().item() <= MEAN_ABS, (diff.max().item(), diff.mean().item())


# --- images -----------------------------------------------------------------------------------------


def test_smart_resize_equals_transformers():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    rng = np.random.default_rng()
    for _ in range(2000):
        h, w = (int(v) for v in rng.integers(1, 3000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        factor = int(rng.choice([8, 28, 32]))
        lo = int(rng.integers(1, 200_000))
        hi = lo + int(rng.integers(0, 3_000_000))
        assert smart_resize(h, w, factor, lo, hi) == hf_smart_resize(h, w, factor, lo, hi), (h, w, factor, lo, hi)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2011, 32, 3136, 1 << 20)


@pytest.mark.parametrize("device", DEVICES)
def test_images_match_transformers(device):
    """One call over real photos of several sizes and modes: resized on both axes in either order,
    on one axis, grown, unchanged; grayscale and RGBA (over white); PIL images and uint8 tensors;
    consecutive same-size images share kernels."""
    names = ["chelsea.png", "camera.png", "logo.png", "coffee.png", "rocket.jpg", "astronaut.png", "ihc.png",
             "horse.png", "microaneurysms.png"]
    ims = [photo(n) for n in names]
    assert {im.mode for im in ims} == {"RGB", "L", "RGBA"}
    cfg = PreprocessConfig()
    hf = make_image_processor(cfg, cfg.min_pixels, cfg.max_pixels)
    ref = hf(images=ims, return_tensors="pt")
    # astronaut and ihc (both 512x512 RGB) go in as tensors: a run of two same-size images.
    inputs = [torch.from_numpy(np.array(im)) if n in ("astronaut.png", "ihc.png") else im for n, im in zip(names, ims)]
    req = VisionRequest.from_images(inputs, device=device)
    assert req.grid_thw.tolist() == ref["image_grid_thw"].tolist()
    assert req.pixel_values.device.type == device and req.pixel_values.dtype == torch.float32
    assert_pixels_close(req.pixel_values, ref["pixel_values"])

    # A smaller budget shrinks everything (a 1411x1411 photo to 448x448 among them).
    small = [photo("retina.jpg"), ims[0]]
    ref = make_image_processor(cfg, cfg.min_pixels, 200 * 1024)(images=small, return_tensors="pt")
    ours = preprocess_images(small, cfg, max_pixels=200 * 1024, device=device)
    assert ours.grid_thw == [tuple(g) for g in ref["image_grid_thw"].tolist()]
    assert ours.sizes == [(1411, 1411), (300, 451)]
    assert_pixels_close(ours.pixel_values, ref["pixel_values"])


def test_images_match_transformers_torchvision_processor():
    """Where torchvision is installed: the same bounds against transformers' torchvision-backed
    ``Qwen2VLImageProcessor`` (a second bicubic implementation)."""
    pytest.importorskip("torchvision")
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    cfg = PreprocessConfig()
    ims = [photo(n) for n in ("chelsea.png", "camera.png", "logo.png", "coffee.png")]
    hf = Qwen2VLImageProcessor(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels},
                               patch_size=cfg.patch_size, temporal_patch_size=cfg.temporal_patch_size,
                               merge_size=cfg.merge_size, image_mean=list(cfg.image_mean), image_std=list(cfg.image_std))
    ref = hf(images=ims, return_tensors="pt")
    ours = preprocess_images(ims, cfg)
    assert ours.grid_thw == [tuple(g) for g in ref["image_grid_thw"].tolist()]
    assert_pixels_close(ours.pixel_values, ref["pixel_values"].float())


def hf_video(frames, cfg: PreprocessConfig) -> tuple[torch.Tensor, list[int]]:
    """The reference: each frame through transformers' image processor with the video budget, an odd
    count padded with the last frame, frames paired on the temporal axis (HF's video layout)."""
    hf = make_image_processor(cfg, cfg.video_min_pixels, cfg.video_max_pixels)
    out = hf(images=frames, return_tensors="pt")
    _, h, w = out["image_grid_thw"][0].tolist()
    C, Tp, P = cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size
    per_frame = out["pixel_values"].view(len(frames), h * w, C, Tp, P, P)[:, :, :, 0]
    if pad := -len(frames) % Tp:
        per_frame = torch.cat([per_frame, per_frame[-1:].expand(pad, -1, -1, -1, -1)])
    return patchify_frames(per_frame, Tp), [per_frame.shape[0] // Tp, h, w]


def qwen_sample_ref(total: int, fps: float, cfg: PreprocessConfig) -> list[int]:
    """qwen-omni-utils' frame sampling, written out: 2 frames per second, [4, min(768, total)],
    a multiple of 2, evenly spread from the first frame to the last."""
    n = total / fps * cfg.video_fps
    n = min(max(n, math.ceil(cfg.video_min_frames / 2) * 2), math.floor(min(cfg.max_frames, total) / 2) * 2)
    n = min(round(n / 2) * 2, total)
    return [int(v) for v in torch.linspace(0, total - 1, n).round().tolist()]


def test_video_frame_sampling():
    cfg = PreprocessConfig()
    for total, fps in [(24, 1000 / 70), (300, 30.0), (31, 29.97), (5, 25.0), (2000, 24.0), (9, 2.0), (100, 0.5)]:
        assert sample_video_indices(total, fps, cfg) == qwen_sample_ref(total, fps, cfg), (total, fps)
    assert sample_video_indices(7, None, cfg) == list(range(7))
    assert sample_video_indices(1, 30.0, cfg) == [0]  # shorter than one temporal patch: kept
    assert len(sample_video_indices(1000, None, PreprocessConfig(max_frames=10))) == 10


@pytest.mark.parametrize("device", DEVICES)
def test_video_matches_per_frame_transformers(device):
    """A real animated GIF's frames (grown 20x) sampled at 2 fps, and a 5-frame pan over a photo
    (an odd count: the last frame repeats)."""
    cfg = PreprocessConfig()
    with Image.open(package_data("skimage", "data") / "no_time_for_that_tiny.gif") as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.array(gif.convert("RGB")))
        fps = 1000.0 / gif.info["duration"]
    video = torch.from_numpy(np.stack(frames))  # [24, 25, 14, 3]
    keep = sample_video_indices(len(frames), fps, cfg)
    assert keep == qwen_sample_ref(len(frames), fps, cfg) and len(keep) == 4
    ref, grid = hf_video([Image.fromarray(frames[i]) for i in keep], cfg)
    req = VisionRequest.from_video(video, fps=fps, device=device)
    assert req.grid_thw.tolist() == [grid] and grid[0] == 2
    assert_pixels_close(req.pixel_values, ref)

    astro = np.array(photo("astronaut.png"))
    pan = [Image.fromarray(astro[40 + 9 * i : 340 + 9 * i, 30 + 17 * i : 430 + 17 * i]) for i in range(5)]
    ref, grid = hf_video(pan, cfg)
    ours = preprocess_video(pan, cfg, device=device)
    assert ours.grid_thw == [tuple(grid)] and grid[0] == 3 and ours.frame_indices == list(range(5))
    assert_pixels_close(ours.pixel_values, ref)


# --- audio ------------------------------------------------------------------------------------------


def test_mel_filter_bank_equals_whisper():
    for mels in (128, 80):
        cfg = PreprocessConfig(num_mel_bins=mels)
        ref = make_feature_extractor(cfg).mel_filters
        ours = mel_filter_bank(mels, 400, 16000)
        assert ours.shape == ref.shape == (201, mels)
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_waveform_features_match_whisper(device):
    """Three 16 kHz speech clips of odd lengths and a stereo pair, in one batched call; each equals
    the Whisper extractor on that clip alone."""
    x, rate = speech(SPEECH_16K)
    assert rate == 16000
    rng = np.random.default_rng()
    a = int(rng.integers(0, 100_000))
    clips = [x[a : a + 48_013], x[:160_001], x[-3_337:]]
    stereo = np.stack([x[50_000:82_001], x[120_000:152_001]])  # [2, samples]
    cfg = PreprocessConfig()
    fe = make_feature_extractor(cfg)
    refs = [whisper_features(fe, c) for c in clips] + [whisper_features(fe, stereo.mean(0))]
    req = AudioRequest.from_waveforms([*clips, torch.from_numpy(stereo)], 16000, device=device)
    assert req.feature_lens.tolist() == [n // 160 for n in (48_013, 160_001, 3_337, 32_001)]
    assert req.input_features.device.type == device
    ref = torch.cat(refs, dim=1)
    assert req.input_features.shape == ref.shape == (128, sum(req.feature_lens.tolist()))
    assert (req.input_features.cpu() - ref).abs().max().item() <= MEL_MAX_ABS


@pytest.mark.parametrize("device", DEVICES)
def test_resampled_features_match_resample_poly(device):
    """Real 44.1 kHz speech, and the 16 kHz recording taken to 22.05 kHz by resample_poly: our
    resampler's features against the features of resample_poly's 16 kHz audio."""
    signal = pytest.importorskip("scipy.signal")
    x44, rate = speech(SPEECH_44K)
    assert rate == 44100
    x16, _ = speech(SPEECH_16K)
    x22 = signal.resample_poly(x16[:90_001].astype(np.float64), 441, 320).astype(np.float32)
    cases = [(x44[150_001:300_000], 44100, 160, 441), (x22, 22050, 320, 441)]
    cfg = PreprocessConfig()
    fe = make_feature_extractor(cfg)
    for x, rate, up, down in cases:
        ref16 = signal.resample_poly(x.astype(np.float64), up, down).astype(np.float32)
        ref = whisper_features(fe, ref16)
        ours = preprocess_waveforms([x], rate, cfg, device=device)
        assert ours.feature_lens == [len(ref16) // 160]
        diff = (ours.input_features.cpu() - ref).abs()
        assert diff.mean().item() <= RESAMPLE_MEAN_ABS, (rate, diff.mean().item())
        # the samples themselves, away from the zero-padded ends
        y = resample(torch.from_numpy(x).to(device), rate, 16000).cpu().numpy()
        assert len(y) == len(ref16) and np.abs(y - ref16)[100:-100].max() < 2e-3


@pytest.mark.filterwarnings("ignore:Chunk .* not understood")
def test_read_audio_formats():
    """soundfile reads what the hand-written wave reader refused: extensible float64, big-endian
    float32, 24-bit PCM (scipy's test files), and FLAC/OGG."""
    wavfile = pytest.importorskip("scipy.io.wavfile")
    root = package_data("scipy", "io/tests/data")
    files = [("test-48000Hz-2ch-64bit-float-le-wavex.wav", 1.0), ("test-44100Hz-2ch-32bit-float-be.wav", 1.0),
             ("test-8000Hz-le-3ch-5S-24bit.wav", 2.0**31)]  # scipy gives 24-bit PCM left-justified in int32
    for name, scale in files:
        x, rate, channels = read_audio(root / name)
        ref_rate, ref = wavfile.read(root / name)
        assert (rate, channels) == (ref_rate, ref.shape[1]) and x.shape == ref.T.shape and x.dtype == np.float32
        np.testing.assert_allclose(x, ref.T / scale, atol=1e-6)


def test_flac_and_ogg_speech(tmp_path):
    import soundfile

    x, _ = speech(SPEECH_16K)
    x = x[:32_000]
    for fmt in ("FLAC", "OGG"):
        path = tmp_path / f"speech.{fmt.lower()}"
        soundfile.write(str(path), x, 16000, format=fmt)
        y, rate, channels = read_audio(path)
        assert (rate, channels, y.shape) == (16000, 1, (1, 32_000))
        tol = 1e-4 if fmt == "FLAC" else 0.2  # FLAC is lossless (16-bit); Vorbis is not
        assert np.abs(y[0] - x).max() <= tol


# --- bad input: a ValueError naming the item and field, before any work -----------------------------


def bad_cases():
    ok = np.zeros((20, 30, 3), np.uint8)
    wave = np.zeros(16000, np.float32)
    nan = wave.copy()
    nan[123] = np.nan
    return [
        ("image", lambda: VisionRequest.from_images([ok, Image.new("RGB", (0, 5))]), r"image 1: field 'size'"),
        ("image", lambda: VisionRequest.from_images([ok, np.zeros((0, 4, 3), np.uint8)]), r"image 1: field 'shape'"),
        ("image", lambda: VisionRequest.from_images([ok.astype(np.float32)]), r"image 0: field 'dtype'"),
        ("image", lambda: VisionRequest.from_images([ok, torch.zeros(2, 20, 30, 3, dtype=torch.uint8)]),
         r"image 1: field 'shape' .*from_video"),
        ("image", lambda: VisionRequest.from_images([ok, ok[..., :1]]), r"image 1: field 'shape'"),
        ("image", lambda: VisionRequest.from_images([np.zeros((1, 400, 3), np.uint8)]),
         r"image 0: field 'size'.*aspect"),
        ("image", lambda: VisionRequest.from_images(["photo.png"]), r"image 0: field 'type'"),
        ("image", lambda: VisionRequest.from_images([]), r"non-empty"),
        ("image", lambda: VisionRequest.from_images([ok], min_pixels=10, max_pixels=5), r"min_pixels"),
        ("image", lambda: VisionRequest.from_video([ok, ok, np.zeros((20, 31, 3), np.uint8)]),
         r"frame 2: field 'size'"),
        ("image", lambda: VisionRequest.from_video(torch.zeros(3, 20, 30, 3)), r"frames: field 'dtype'"),
        ("image", lambda: VisionRequest.from_video(torch.zeros(20, 30, 3, dtype=torch.uint8)),
         r"frames: field 'shape'"),
        ("image", lambda: VisionRequest.from_video([ok, ok], fps=0), r"fps"),
        ("audio", lambda: AudioRequest.from_waveforms([wave, np.zeros(0, np.float32)]), r"waveform 1: field 'shape'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave, nan]), r"waveform 1: field 'samples' holds NaN"),
        ("audio", lambda: AudioRequest.from_waveforms([(wave * 3e4).astype(np.int16)]), r"waveform 0: field 'dtype'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave[:399]]), r"waveform 0: field 'length'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave[:1000]], 44100), r"waveform 0: field 'length'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave], 0), r"waveform 0: field 'sampling_rate'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave], 16000.5), r"waveform 0: field 'sampling_rate'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave, np.zeros((16000, 2), np.float32)]),
         r"waveform 1: field 'shape'.*transpose"),
        ("audio", lambda: AudioRequest.from_waveforms([np.zeros((2, 2, 800), np.float32)]),
         r"waveform 0: field 'shape'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave, [0.0] * 800]), r"waveform 1: field 'type'"),
        ("audio", lambda: AudioRequest.from_waveforms([wave, wave], [16000]), r"2 waveforms"),
    ]


def test_bad_inputs_name_the_item_before_any_work(monkeypatch):
    import omnienc.preprocess.audio as audio_mod
    import omnienc.preprocess.image as image_mod

    def work(*args, **kwargs):
        raise AssertionError("preprocessing started before validation finished")

    for mod, name in [(image_mod, "resize_bicubic"), (image_mod, "_write_patches"), (audio_mod, "resample"),
                      (audio_mod, "log_mel")]:
        monkeypatch.setattr(mod, name, work)
    for _, call, message in bad_cases():
        with pytest.raises(ValueError, match=message):
            call()


# --- from_* requests encode like transformers-processed inputs -------------------------------------


@torch.no_grad()
def test_requests_encode_like_transformers_inputs():
    """Tiny encoders (fp32), through the runtime: requests built by from_images / from_video /
    from_waveforms against the encoders called directly on transformers-processed inputs."""
    _, vis = hf_and_native_vision(tiny_vision_config())
    _, aud = hf_and_native_audio(tiny_audio_config())
    cfg = PreprocessConfig.from_configs(vis.config, aud.config, max_pixels=128 * 64,
                                       video_min_pixels=32 * 64, video_max_pixels=96 * 64)
    grid = BucketGrid.from_dict({"dtype": "float32", "vision": {"patches": [1024], "batch": [4]},
                                 "audio": {"frames": [800], "batch": [2]}})
    rt = EncoderRuntime(vision=vis, audio=aud, grid=grid)

    ims = [photo("coffee.png"), photo("camera.png"), photo("logo.png")]
    astro = np.array(photo("astronaut.png"))
    pan = [astro[10 * i : 300 + 10 * i, 20 * i : 400 + 20 * i] for i in range(4)]
    x16, _ = speech(SPEECH_16K)
    x44, _ = speech(SPEECH_44K)
    clips = [(x16[:40_001], 16000), (x44[200_000:310_001], 44100)]
    reqs = [VisionRequest.from_images(ims, config=cfg),
            VisionRequest.from_video(torch.from_numpy(np.stack(pan)), config=cfg),
            AudioRequest.from_waveforms([c for c, _ in clips], [r for _, r in clips], config=cfg)]
    outs = rt.encode(reqs)

    hf = make_image_processor(cfg, cfg.min_pixels, cfg.max_pixels)(images=ims, return_tensors="pt")
    assert reqs[0].grid_thw.tolist() == hf["image_grid_thw"].tolist()
    embeds, deepstack = vis(hf["pixel_values"], hf["image_grid_thw"])
    # The bicubic filters differ in an occasional last bit (one level of 255 in ~1e-4 of the values);
    # carried through the encoder that is ~5e-5 relative (measured), where identical inputs give 1e-5.
    assert rel_err(outs[0].embeds, embeds) <= VISION_TOL
    assert all(rel_err(a, b) <= VISION_TOL for a, b in zip(outs[0].deepstack, deepstack))

    video_ref, video_grid = hf_video([Image.fromarray(f) for f in pan], cfg)
    assert reqs[1].grid_thw.tolist() == [video_grid]
    assert rel_err(outs[1].embeds, vis(video_ref, torch.tensor([video_grid]))[0]) <= VISION_TOL

    signal = pytest.importorskip("scipy.signal")
    fe = make_feature_extractor(cfg)
    refs = [whisper_features(fe, clips[0][0]),
            whisper_features(fe, signal.resample_poly(clips[1][0].astype(np.float64), 160, 441).astype(np.float32))]
    lens = [r.shape[1] for r in refs]
    assert reqs[2].feature_lens.tolist() == lens
    ref = aud(torch.cat(refs, dim=1), lens)
    assert rel_err(outs[2].embeds, ref) <= ENCODER_TOL  # the log-mel agrees to ~1e-7


# --- GPU: no host syncs -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_no_host_sync_on_cuda():
    """From host inputs through pinned staging (``pin_host_inputs``; the default pageable copies wait
    for the stream by CUDA's rule) and from inputs already on the GPU, after a warm-up that caches
    the constants and captures the layouts' graphs, preprocessing on CUDA issues no synchronizing
    call, kernel by kernel or by graph replay; the results equal the CPU's within the bounds."""
    pin = PreprocessConfig(pin_host_inputs=True)
    ims = [photo("chelsea.png"), photo("astronaut.png")]
    video = torch.from_numpy(np.stack([np.array(photo("astronaut.png"))[i : 400 + i, :448] for i in range(3)]))
    x44, _ = speech(SPEECH_44K)
    waves = [x44[:441_000], x44[100_001:200_000]]

    from omnienc.runtime import preprocess_requests
    from bench_preprocess import _on_device

    items = mixed_raw_items(np.random.default_rng())
    resident = _on_device(items, "cuda")

    def run():
        return (preprocess_images(ims, pin, device="cuda"), preprocess_video(video, pin, fps=1.0, device="cuda"),
                preprocess_waveforms(waves, 44100, pin, device="cuda"),
                preprocess_requests(items, device="cuda", config=pin, graphs=False),
                preprocess_requests(items, device="cuda", config=pin),
                preprocess_requests(resident, device="cuda", config=pin))

    for _ in range(3):  # warm-up; the graphs of the two layouts are captured at their second run
        run()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        img, vid, aud, many_eager, many, many_resident = run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b, d, c in zip(many, many_resident, many_eager, preprocess_requests(items)):
        for x, y, e, z in zip(vars(a).values(), vars(b).values(), vars(d).values(), vars(c).values()):
            assert torch.equal(x.cpu(), y.cpu()) and torch.equal(x.cpu(), e.cpu())
            if x.is_floating_point():
                assert (x.cpu() - z).abs().max().item() <= max(MAX_ABS, MEL_MAX_ABS)
    cpu = (preprocess_images(ims), preprocess_video(video, fps=1.0), preprocess_waveforms(waves, 44100))
    assert_pixels_close(img.pixel_values, cpu[0].pixel_values)
    assert_pixels_close(vid.pixel_values, cpu[1].pixel_values)
    assert (aud.input_features.cpu() - cpu[2].input_features).abs().max().item() <= MEL_MAX_ABS


# --- many requests in one pass ---------------------------------------------------------------------


def mixed_raw_items(rng):
    from omnienc.preprocess import RawAudio, RawImages, RawVideo

    def im(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def wave(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    return [
        RawImages([im(100, 120)]),
        RawAudio([wave(16000 + int(rng.integers(0, 160)))]),
        RawImages([im(64, 64), Image.fromarray(im(100, 120)).convert("L"), im(300, 200)], max_pixels=128 * 128),
        RawVideo(torch.from_numpy(np.stack([im(90, 130)] * 7)), fps=3.0),
        RawAudio([wave(4567), wave(44_100), np.stack([wave(30_011), wave(30_011)])],
                 [16000, 44100, 16000]),
        RawImages([im(100, 120)]),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_preprocess_requests_equals_one_request_at_a_time(device):
    """One pass over six requests (images of shared and distinct sizes, a grayscale one, a budget,
    a video, clips at 16 and 44.1 kHz, a stereo one) gives each request what its own constructor
    gives, bit for bit (on CUDA within 1e-4: host inputs copied into their slots one by one)."""
    from omnienc.preprocess import RawAudio, RawImages
    from omnienc.runtime import preprocess_requests

    items = mixed_raw_items(np.random.default_rng())
    many = preprocess_requests(items, device=device)
    for it, got in zip(items, many):
        if isinstance(it, RawImages):
            ref = VisionRequest.from_images(it.images, min_pixels=it.min_pixels, max_pixels=it.max_pixels,
                                            device=device)
        elif isinstance(it, RawAudio):
            ref = AudioRequest.from_waveforms(it.waveforms, it.sampling_rate, device=device)
        else:
            ref = VisionRequest.from_video(it.frames, fps=it.fps, device=device)
        for a, b in zip(vars(got).values(), vars(ref).values()):
            # On CUDA a batch's FFT and GEMM may pick other kernels than one clip's: not bitwise.
            exact = device == "cpu" or not a.is_floating_point()
            assert a.shape == b.shape and (torch.equal(a, b) if exact else torch.allclose(a, b, rtol=0, atol=1e-4))
    with pytest.raises(ValueError, match=r"item 4: waveform 1: field 'samples' holds NaN"):
        preprocess_requests(items[:4] + [RawAudio([np.ones(800, np.float32), np.full(800, np.nan, np.float32)])])


def _layouts(rng, device=None):
    """Items of four fixed layouts with fresh random content: one 448x448 image; 30 s of audio and
    one odd; two same-size images, clips at 16 and 44.1 kHz, a 5-frame video, a stereo clip."""
    from omnienc.preprocess import RawAudio, RawImages, RawVideo

    def im(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def wave(*shape):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)

    layouts = [[RawImages([im(448, 448)])], [RawAudio([wave(480_000), wave(16_001)])],
               [RawImages([im(100, 120), im(100, 120)]), RawAudio([wave(4567), wave(44_100)], [16000, 44100]),
                RawVideo(torch.from_numpy(np.stack([im(90, 130) for _ in range(5)])), fps=3.0),
                RawAudio([wave(2, 30_011)])]]
    if device is not None:
        from bench_preprocess import _on_device

        layouts.append(_on_device(layouts[2], device))
    return layouts


@pytest.mark.gpu
def test_preprocess_graphs_equal_eager_and_own_their_outputs(monkeypatch):
    """Four item lists (the last one the third's on the GPU: one layout), four calls each with fresh
    content: from a layout's second call on a graph replays, every result equals the kernel-by-kernel one bit for bit, and a result
    stays as it was after later replays (the caller owns it). A layout whose capture fails runs
    eagerly, correctly, and is not captured again."""
    from omnienc.preprocess import graphs
    from omnienc.preprocess.batch import plan_items

    dev = torch.device("cuda", torch.cuda.current_device())
    g, cfg, rng = graphs.PreprocessGraphs(dev), PreprocessConfig(), np.random.default_rng()
    kept = []
    for _ in range(4):
        for items in _layouts(rng, dev):
            got = g.run(plan_items(items, cfg), cfg)
            ref = preprocess_many(items, cfg, device=dev, graphs=False)
            for a, b in zip(got, ref):
                for x, y in zip(vars(a).values(), vars(b).values()):
                    assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y)
            kept.append((got, [[t.clone() for t in vars(o).values() if isinstance(t, torch.Tensor)] for o in got]))
    for got, copy in kept:
        for o, c in zip(got, copy):
            assert all(torch.equal(t, u) for t, u in zip([t for t in vars(o).values() if isinstance(t, torch.Tensor)], c))
    # Three layouts: the fourth list (the third's inputs on the GPU) has the third's key.
    assert g.stats() == {"eager": 3, "replays": 10, "captures": 3, "failures": 0, "evictions": 0, "graphs": 3}

    class Broken(torch.cuda.CUDAGraph):
        def capture_begin(self, *args, **kwargs):
            raise RuntimeError("no capture")

    monkeypatch.setattr(graphs.torch.cuda, "CUDAGraph", Broken)
    g = graphs.PreprocessGraphs(dev)
    items = _layouts(rng)[0]
    for _ in range(3):
        got = g.run(plan_items(items, cfg), cfg)
        assert torch.equal(got[0].pixel_values, preprocess_many(items, cfg, device=dev, graphs=False)[0].pixel_values)
    assert g.stats()["failures"] == 1 and g.stats()["eager"] == 3 and g.stats()["graphs"] == 0


def test_layout_key_is_sizes_not_content():
    from omnienc.preprocess.batch import layout_key, plan_items

    rng, cfg = np.random.default_rng(), PreprocessConfig()
    a, b = _layouts(rng), _layouts(rng)
    assert [layout_key(plan_items(x, cfg)) for x in a] == [layout_key(plan_items(x, cfg)) for x in b]
    assert len({layout_key(plan_items(x, cfg)) for x in a}) == len(a)
    from omnienc.preprocess import RawImages

    smaller = [RawImages(a[0][0].images, max_pixels=100 * 1024)]  # same image, another target size
    assert layout_key(plan_items(smaller, cfg)) != layout_key(plan_items(a[0], cfg))


def test_log_mel_of_many_clips_is_one_batched_pass():
    """The batched log-mel runs the same kernels for 1 and for 9 clips (a fixed count, not one group
    per clip: the reflect padding of every clip is one gather), each clip equal to Whisper's features
    of that clip alone."""
    from bench_preprocess import count_ops

    rng = np.random.default_rng()
    clips = [(0.1 * rng.standard_normal(int(n))).astype(np.float32) for n in rng.integers(400, 40_000, 9)]
    one = count_ops(lambda: preprocess_waveforms(clips[:1]))
    many = count_ops(lambda: preprocess_waveforms(clips))
    assert sum(one.values()) <= 12 and sum(many.values()) <= sum(one.values()) + 5, (one, many)
    out = preprocess_waveforms(clips)
    fe = make_feature_extractor(PreprocessConfig())
    refs = [whisper_features(fe, c) for c in clips]
    assert out.feature_lens == [r.shape[1] for r in refs]
    assert (out.input_features - torch.cat(refs, 1)).abs().max().item() <= MEL_MAX_ABS


def test_no_sync_inducing_op_in_preprocessing():
    """No operation that makes the host wait for a device (``.item()``, ``nonzero``, boolean masks,
    ``unique``, reading a tensor back) is dispatched by preprocessing, with host or with
    'device-resident' inputs; sizes come from host-side shapes. Also counts kernels: images of one
    size share them across requests."""
    from omnienc.preprocess import RawImages
    from omnienc.runtime import preprocess_requests
    from bench_preprocess import SYNC_OPS, _on_device, count_ops

    items = mixed_raw_items(np.random.default_rng())
    for its in (items, _on_device([it for it in items if not isinstance(it, RawImages)], "cpu")):
        ops = count_ops(lambda: preprocess_requests(its))
        assert not set(ops) & SYNC_OPS, ops
        assert all(o not in ops for o in ("_to_copy_cpu", "index_put_", "masked_fill_")), ops
    rng = np.random.default_rng()
    same = [RawImages([rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)]) for _ in range(6)]
    assert count_ops(lambda: preprocess_requests(same)) == count_ops(lambda: preprocess_requests(same[:1]))


# --- the benchmark script, smoke-tested on the CPU -------------------------------------------------


def test_bench_preprocess_smoke(tmp_path):
    import bench_preprocess as bp

    names = ["image448", "image720p", "audio10s", "audio30s44k"]
    report = bp.run_preprocess_bench("cpu", repeats=1, warmup=0, workloads=names, tiny=True)
    assert list(report["workloads"]) == names
    for row in report["workloads"].values():
        assert row["ours_cpu"]["median_ms"] > 0 and row["hf_cpu"]["median_ms"] > 0
        assert row["ours_gpu"] is None and row["ours_gpu_resident"] is None  # no CUDA here
        assert row["kernels"]["total"] > 0 and row["kernels"]["syncs"] == 0
    assert set(report["copies"]) == set(bp.COPIES)
    assert all(r["host_reused"]["median_ms"] > 0 and "pageable" not in r for r in report["copies"].values())
    table = bp.format_markdown(report)
    assert all(f"| {name} |" in table for name in names)
    out = tmp_path / "r.json"
    assert bp.main(["--device", "cpu", "--tiny", "--repeats", "1", "--warmup", "0", "--no-hf", "--no-copies",
                    "--workloads", "image720p,audio30s44k", "--out", str(out)]) == 0
    assert list(json.loads(out.read_text())["workloads"]) == ["image720p", "audio30s44k"]
    assert bp.main(["--device", "cpu", "--workloads", "nope"]) == 2
