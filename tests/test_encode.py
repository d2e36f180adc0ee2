"""``omnienc encode`` and its file preprocessing, on the CPU with a tiny synthetic checkpoint.

Inputs (a PNG, an animated GIF, a folder of frames, WAV files) are generated at test time. Checks:
the transformers backend of ``Preprocessor`` equals what transformers' processors give directly (and
an independent reference of the video patch layout); the written embeddings equal the native
encoders called directly on the inputs ``encode`` preprocesses (the torch backend, whose parity with
transformers is tests/test_preprocess.py's subject); shapes follow the grids and frame counts;
metadata; and every error path exits with status 2 and a message, no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import wave

import numpy as np
import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision, rel_err, tiny_vision_config
from safetensors import safe_open
from safetensors.torch import save_file

from omnienc.encoders import AudioEncoder, VisionEncoder, audio_output_length
from omnienc.runtime import VisionRequest
from omnienc.tools import encode
from omnienc.preprocess import (
    InputError,
    PreprocessConfig,
    Preprocessor,
    read_audio,
    read_video_frames,
    resample,
    resampled_length,
    sample_video_indices,
)

Image = pytest.importorskip("PIL.Image")

TOL = 1e-5


# --- fixtures: a checkpoint and input files made at test time --------------------------------------


def write_checkpoint(root, hf_vision, hf_audio, preprocessor_config=None):
    """config.json with thinker_config.{vision,audio}_config and one model.safetensors."""
    root.mkdir(parents=True, exist_ok=True)
    tensors = {f"thinker.visual.{k}": v.contiguous() for k, v in hf_vision.state_dict().items()}
    tensors |= {f"thinker.audio_tower.{k}": v.contiguous() for k, v in hf_audio.state_dict().items()}
    save_file(tensors, str(root / "model.safetensors"))
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {
        "vision_config": hf_vision.config.to_dict(), "audio_config": hf_audio.config.to_dict()}}
    (root / "config.json").write_text(json.dumps(config))
    if preprocessor_config is not None:
        (root / "preprocessor_config.json").write_text(json.dumps(preprocessor_config))
    return root


def write_wav(path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    """Writes ``samples`` ([n] or [n, channels], floats in [-1, 1]) as PCM WAV of ``width`` bytes."""
    x = samples.reshape(len(samples), -1)
    if width == 1:
        data = np.clip(np.round(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        data = np.round(x * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.round(x * 8388607).astype("<i4").reshape(-1)
        data = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], 1).astype(np.uint8).tobytes()
    else:
        data = np.round(x * 2147483647).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


def tone(seconds: float, rate: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """Two sines plus white noise."""
    t = np.arange(round(seconds * rate)) / rate
    hiss = noise * np.random.default_rng(seed).standard_normal(len(t))
    return 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1250 * t) + hiss


def random_image(h: int, w: int, seed: int):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode")
    hf_v, _ = hf_and_native_vision()
    hf_a, _ = hf_and_native_audio()
    ckpt = write_checkpoint(root / "ckpt", hf_v, hf_a)
    files = {"png": root / "photo.png", "png2": root / "wide.png", "gif": root / "clip.gif",
             "wav": root / "speech.wav", "frames": root / "frames"}
    random_image(37, 53, 0).save(files["png"])
    random_image(20, 90, 1).convert("L").save(files["png2"])  # grayscale: the processor makes RGB
    frames = [random_image(30, 41, 10 + i) for i in range(5)]  # odd count: the last frame repeats
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=500, loop=0)
    files["frames"].mkdir()
    for i, f in enumerate(frames[:4]):
        f.save(files["frames"] / f"{i:03d}.png")
    write_wav(files["wav"], np.stack([tone(1.37, 22050), tone(1.37, 22050, 1)], 1) * 0.8, 22050)
    return root, ckpt, files


def run_encode(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnienc")
    encode.register(parser.add_subparsers())
    args = parser.parse_args(["encode", *argv])
    return args.func(args)


def read_output(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# --- preprocessing --------------------------------------------------------------------------------


def smart_resize_ref(h: int, w: int, factor: int, lo: int, hi: int) -> tuple[int, int]:
    """The Qwen2-VL resize rule, written out here: nearest multiples of ``factor``, then scaled into
    [lo, hi] pixels keeping the aspect ratio."""
    rh, rw = round(h / factor) * factor, round(w / factor) * factor
    if rh * rw > hi:
        s = math.sqrt(h * w / hi)
        rh, rw = max(factor, math.floor(h / s / factor) * factor), max(factor, math.floor(w / s / factor) * factor)
    elif rh * rw < lo:
        s = math.sqrt(lo / (h * w))
        rh, rw = math.ceil(h * s / factor) * factor, math.ceil(w * s / factor) * factor
    return rh, rw


def test_config_from_checkpoint(setup, tmp_path):
    _, ckpt, _ = setup
    cfg = PreprocessConfig.from_checkpoint(ckpt)
    assert (cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size, cfg.num_mel_bins) == (4, 2, 2, 16)
    assert cfg.image_mean == cfg.image_std == (0.5, 0.5, 0.5)
    assert (cfg.min_pixels, cfg.max_pixels) == (3136, 1280 * 8 * 8)
    assert (cfg.video_min_pixels, cfg.video_max_pixels) == (128 * 64, 768 * 64)
    # preprocessor_config.json's normalization and floor are honoured; a patch size that
    # contradicts the vision config is refused.
    hf_v, _ = hf_and_native_vision()
    hf_a, _ = hf_and_native_audio()
    pre = {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.4], "min_pixels": 1000, "patch_size": 4}
    cfg = PreprocessConfig.from_checkpoint(write_checkpoint(tmp_path / "a", hf_v, hf_a, pre), max_pixels=5000)
    assert (cfg.image_mean, cfg.min_pixels, cfg.max_pixels) == ((0.4, 0.5, 0.6), 1000, 5000)
    with pytest.raises(ValueError, match="patch_size is 16"):
        PreprocessConfig.from_checkpoint(write_checkpoint(tmp_path / "b", hf_v, hf_a, {"patch_size": 16}))


def test_image_inputs_equal_transformers_processor(setup):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _, ckpt, files = setup
    cfg = PreprocessConfig.from_checkpoint(ckpt)
    hf = Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 1280 * 64}, patch_size=4,
                                  temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    for key in ("png", "png2"):
        ours = Preprocessor(cfg, backend="transformers").image(files[key])
        with Image.open(files[key]) as im:
            ref = hf(images=[im], return_tensors="pt")
            h, w = smart_resize_ref(im.height, im.width, 8, 3136, 1280 * 64)
        assert torch.equal(ours.pixel_values, ref["pixel_values"])
        assert list(ours.grid_thw) == ref["image_grid_thw"][0].tolist() == [1, h // 4, w // 4]
        assert ours.meta["resized"] == [h, w]


def video_reference(frames, cfg: PreprocessConfig) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Independent video patches: PIL bicubic resize, (x/255 - mean)/std, odd count padded with the
    last frame, then patches ordered (t, merged row, merged column, 2x2 block) of [C, Tp, P, P]."""
    h, w = smart_resize_ref(frames[0].height, frames[0].width, cfg.factor, cfg.video_min_pixels, cfg.video_max_pixels)
    arr = np.stack([np.asarray(f.resize((w, h), Image.BICUBIC), dtype=np.float32) for f in frames])  # [F, H, W, C]
    x = torch.from_numpy((arr / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2)  # [F, C, H, W]
    if len(frames) % 2:
        x = torch.cat([x, x[-1:]])
    P, m = cfg.patch_size, cfg.merge_size
    t, gh, gw = x.shape[0] // 2, h // P, w // P
    rows = []
    for ti in range(t):
        for br in range(gh // m):
            for bc in range(gw // m):
                for ir in range(m):
                    for ic in range(m):
                        r, c = (br * m + ir) * P, (bc * m + ic) * P
                        rows.append(x[2 * ti : 2 * ti + 2, :, r : r + P, c : c + P].transpose(0, 1).reshape(-1))
    return torch.stack(rows), (t, gh, gw)


@pytest.mark.parametrize("source", ["gif", "frames"])
def test_video_inputs_follow_the_video_patch_layout(setup, source):
    _, ckpt, files = setup
    cfg = PreprocessConfig.from_checkpoint(ckpt)
    ours = Preprocessor(cfg, backend="transformers").video(files[source])
    frames, indices, _ = read_video_frames(files[source], cfg)
    n = 4  # gif: 5 frames sampled to 4 (at least 4, a multiple of 2); folder: its 4 frames
    expected = sample_video_indices(5, 5 / ours.meta["seconds"], cfg) if source == "gif" else list(range(4))
    assert indices == expected and len(indices) == n and ours.meta["frames"] == n
    ref, grid = video_reference(frames, cfg)
    assert ours.grid_thw == grid and grid[0] == math.ceil(n / 2)
    assert max_err(ours.pixel_values, ref) <= 1e-6


def test_mp4_video_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    rng = np.random.default_rng(3)
    try:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
            for _ in range(13):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except Exception as e:  # an FFmpeg build without the mpeg4 encoder
        pytest.skip(f"cannot write a test mp4 here: {e}")
    # 13 frames at 10 fps, 2 per second -> 2.6, raised to the floor of 4, spread over the video
    frames, indices, seconds = read_video_frames(path)
    assert indices == sample_video_indices(13, 10.0) == [0, 4, 8, 12]
    assert frames[0].size == (48, 32) and seconds == pytest.approx(1.3)
    assert read_video_frames(path, PreprocessConfig(video_fps=0, max_frames=3))[1] == [0, 6, 12]
    item = Preprocessor(PreprocessConfig(patch_size=4, video_min_pixels=1024)).video(path)
    assert item.grid_thw[0] == 2 and item.meta["frame_indices"] == [0, 4, 8, 12]
    # the same rule as from_video on the decoded stream
    all_frames = torch.from_numpy(np.stack([np.array(f) for f in read_video_frames(path, PreprocessConfig(
        video_fps=0))[0]]))
    assert VisionRequest.from_video(all_frames, fps=10.0, config=PreprocessConfig(patch_size=4, video_min_pixels=1024)
                                    ).grid_thw.tolist() == [list(item.grid_thw)]


def test_mp4_without_pyav_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(InputError, match="pip install av"):
        read_video_frames(path)


def test_decoding_samples_frames_as_from_video(tmp_path):
    """A GIF of 23 frames of 70 ms: the decoder keeps what ``sample_video_indices`` (from_video's
    rule) keeps for 23 frames at 1000/70 fps."""
    rng = np.random.default_rng()
    frames = [Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)) for _ in range(23)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=70, loop=0)
    got, indices, seconds = read_video_frames(path)
    assert seconds == pytest.approx(23 * 0.07)
    assert indices == sample_video_indices(23, 23 / seconds) == [0, 7, 15, 22] and len(got) == 4


def test_audio_features_equal_whisper_extractor(setup):
    from transformers import WhisperFeatureExtractor

    _, ckpt, files = setup
    cfg = PreprocessConfig.from_checkpoint(ckpt)
    ours = Preprocessor(cfg, backend="transformers").audio(files["wav"])
    x, rate, channels = read_audio(files["wav"])
    assert (rate, channels) == (22050, 2) and x.shape[0] == 2
    x16 = resample(torch.from_numpy(x).mean(0), rate, 16000).numpy()
    assert len(x16) == resampled_length(x.shape[1], 22050, 16000) == math.ceil(x.shape[1] * 16000 / 22050)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, n_fft=400)
    ref = fe([x16], sampling_rate=16000, padding=True, truncation=False, return_attention_mask=True,
             return_tensors="pt")
    assert ref["attention_mask"].all()
    assert torch.equal(ours.input_features, ref["input_features"][0])
    assert ours.input_features.shape == (16, len(x16) // 160)
    torch_backend = Preprocessor(cfg).audio(files["wav"]).input_features
    assert max_err(torch_backend, ours.input_features) <= 2e-3


@pytest.mark.parametrize("width", [1, 3, 4])
def test_wav_sample_widths(tmp_path, width):
    x = tone(0.2, 16000) * 0.9
    write_wav(tmp_path / "16.wav", x, 16000, 2)
    write_wav(tmp_path / "w.wav", x, 16000, width)
    a, _, _ = read_audio(tmp_path / "16.wav")
    b, _, _ = read_audio(tmp_path / "w.wav")
    assert a.shape == b.shape == (1, len(x))
    assert np.abs(a - b).max() <= (1 / 100 if width == 1 else 1e-4)


def test_resample_keeps_a_tone():
    for rate in (44100, 22050, 8000):
        x = resample(torch.from_numpy(tone(1.0, rate, noise=0.0)).float(), rate, 16000).numpy()
        ref = tone(1.0, 16000, noise=0.0)
        inner = slice(800, -800)  # the ends of a non-periodic signal ring a little
        assert len(x) == 16000 and np.abs(x[inner] - ref[inner]).max() < 1e-2


# --- encode end to end ----------------------------------------------------------------------------


@torch.no_grad()
def test_encode_writes_native_embeddings(setup, capsys):
    root, ckpt, files = setup
    out = root / "out.safetensors"
    argv = ["--checkpoint", str(ckpt), "--image", str(files["png"]), "--video", str(files["gif"]),
            "--audio", str(files["wav"]), "--image", str(files["png2"]), "--video", str(files["frames"]),
            "--device", "cpu", "--dtype", "float32", "--video-min-pixels", "2048", "-o", str(out)]
    assert run_encode(argv) == 0
    printed = capsys.readouterr().out
    assert "2 images" in printed and "2 videos" in printed and "1 audio" in printed and " fallbacks" in printed
    tensors, meta = read_output(out)

    cfg = PreprocessConfig.from_checkpoint(ckpt, video_min_pixels=2048)
    pre = Preprocessor(cfg)
    vis = VisionEncoder.from_pretrained(ckpt, dtype=torch.float32)
    aud = AudioEncoder.from_pretrained(ckpt, dtype=torch.float32)
    expected_keys = set()
    for kind, key, k in (("image", "png", 0), ("image", "png2", 1), ("video", "gif", 0), ("video", "frames", 1)):
        item = pre.image(files[key]) if kind == "image" else pre.video(files[key])
        t, h, w = item.grid_thw
        embeds, deepstack = vis(item.pixel_values, torch.tensor([item.grid_thw]))
        name = f"{kind}.{k}"
        assert tensors[f"{name}.embeds"].shape == (t * h * w // 4, 40)
        assert max_err(tensors[f"{name}.embeds"], embeds) <= TOL
        for j, ds in enumerate(deepstack):
            assert max_err(tensors[f"{name}.deepstack.{j}"], ds) <= TOL
        expected_keys |= {f"{name}.embeds"} | {f"{name}.deepstack.{j}" for j in range(3)}
        assert json.loads(meta[f"{name}.grid_thw"]) == [t, h, w]
        assert meta[f"{name}.tokens"] == str(t * h * w // 4)
        assert meta[f"{name}.source"] == str(files[key])
    assert json.loads(meta["video.0.frames"]) == 4 and json.loads(meta["video.0.grid_thw"])[0] == 2  # 5 -> 4 sampled
    assert json.loads(meta["video.1.frames"]) == 4 and json.loads(meta["video.1.grid_thw"])[0] == 2
    assert json.loads(meta["image.1.size"]) == [20, 90]

    item = pre.audio(files["wav"])
    T = item.input_features.shape[1]
    assert T == round(1.37 * 16000) // 160
    ref = aud(item.input_features, [T])
    assert tensors["audio.0.embeds"].shape == (audio_output_length(T), 24)
    assert max_err(tensors["audio.0.embeds"], ref) <= TOL
    expected_keys.add("audio.0.embeds")
    assert set(tensors) == expected_keys
    assert (meta["audio.0.frames"], meta["audio.0.tokens"]) == (str(T), str(audio_output_length(T)))
    assert (meta["audio.0.sample_rate"], meta["audio.0.channels"]) == ("22050", "2")

    assert meta["format"] == encode.FORMAT and meta["dtype"] == "float32"
    dims = (meta["vision.out_hidden_size"], meta["vision.deepstack_layers"], meta["audio.output_dim"])
    assert dims == ("40", "3", "24")
    assert (meta["image.count"], meta["video.count"], meta["audio.count"]) == ("2", "2", "1")
    assert json.loads(meta["preprocess"])["patch_size"] == 4


@torch.no_grad()
def test_encode_with_grid_file_cuts_a_video_larger_than_every_bucket(setup, tmp_path, capsys):
    _, ckpt, files = setup
    grid = tmp_path / "grid.yaml"  # the GIF video (2 x 10 x 14 patches) fits no bucket: cut into its frames
    grid.write_text("dtype: float32\nvision:\n  patches: [256]\n  batch: [2]\naudio:\n  frames: [200]\n  batch: [1]\n")
    out = tmp_path / "o.safetensors"
    argv = ["--checkpoint", str(ckpt), "--image", str(files["png"]), "--video", str(files["gif"]),
            "--audio", str(files["wav"]), "--grid", str(grid), "--device", "cpu", "--video-min-pixels", "2048",
            "-o", str(out)]
    trace = tmp_path / "t.jsonl"
    assert run_encode(argv + ["--trace", str(trace)]) == 0
    assert "0 fallbacks," in capsys.readouterr().out
    from omnienc.runtime import read_trace

    recs = read_trace(trace)  # what was encoded, for omnienc simulate / tune
    assert sorted(r.modality for r in recs) == ["audio", "vision", "vision"]
    assert any(r.grid_thw and r.grid_thw[0][0] == 2 for r in recs)  # the GIF video: 4 frames sampled, t = 2
    tensors, meta = read_output(out)
    assert meta["dtype"] == "float32"  # from the grid
    pre = Preprocessor(PreprocessConfig.from_checkpoint(ckpt, video_min_pixels=2048))
    vis = VisionEncoder.from_pretrained(ckpt, dtype=torch.float32)
    item = pre.video(files["gif"])
    assert item.grid_thw == (2, 10, 14)  # 5 GIF frames sampled to 4
    assert max_err(tensors["video.0.embeds"], vis(item.pixel_values, torch.tensor([item.grid_thw]))[0]) <= TOL


def test_only_the_needed_encoder_is_loaded(setup, tmp_path, capsys):
    """An audio-only run works on a checkpoint without a vision config or weights."""
    _, _, files = setup
    hf_a, _ = hf_and_native_audio()
    root = tmp_path / "audio_only"
    root.mkdir()
    save_file({f"thinker.audio_tower.{k}": v.contiguous() for k, v in hf_a.state_dict().items()},
              str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"thinker_config": {"audio_config": hf_a.config.to_dict()}}))
    out = tmp_path / "a.safetensors"
    assert run_encode(["--checkpoint", str(root), "--audio", str(files["wav"]), "--device", "cpu",
                       "--dtype", "float32", "-o", str(out)]) == 0
    tensors, meta = read_output(out)
    assert set(tensors) == {"audio.0.embeds"} and "vision.out_hidden_size" not in meta


@torch.no_grad()
def test_encode_with_random_weights_needs_no_checkpoint(setup, tmp_path, capsys):
    """``--random-weights``: reduced sizes on a CPU, the packaged grid, shapes from the reduced configs."""
    from omnienc.tools.models import reduced_configs

    _, _, files = setup
    out = tmp_path / "r.safetensors"
    assert run_encode(["--random-weights", "--image", str(files["png"]), "--audio", str(files["wav"]),
                       "--device", "cpu", "--dtype", "float32", "--no-progress", "-o", str(out)]) == 0
    assert "random weights at the reduced model sizes" in capsys.readouterr().out
    tensors, meta = read_output(out)
    vcfg, acfg = reduced_configs()
    t, h, w = json.loads(meta["image.0.grid_thw"])
    assert (t, h, w) == (1, 4, 6)  # 37x53 pixels -> 64x96 with patch 16 and the 3136-pixel floor
    assert tensors["image.0.embeds"].shape == (t * h * w // 4, vcfg.out_hidden_size)
    T = int(meta["audio.0.frames"])
    assert tensors["audio.0.embeds"].shape == (audio_output_length(T), acfg.output_dim)
    assert meta["checkpoint"] == "random-weights:reduced"
    assert json.loads(meta["preprocess"])["num_mel_bins"] == acfg.num_mel_bins
    with pytest.raises(SystemExit):  # --checkpoint and --random-weights exclude each other
        run_encode(["--random-weights", "--checkpoint", str(tmp_path), "--image", str(files["png"]), "-o", str(out)])
    capsys.readouterr()


# --- errors: status 2, a message, no traceback ----------------------------------------------------


def error_cases(root, ckpt, files):
    text = root / "notes.txt"
    text.write_text("not an image")
    short = root / "short.wav"
    write_wav(short, tone(0.01, 16000), 16000)
    bad_grid = root / "bad_grid.yaml"
    bad_grid.write_text("vision:\n  patches: [30]\n  batch: [1]\n")
    out = str(root / "err.safetensors")
    base = ["--checkpoint", str(ckpt), "--device", "cpu", "-o", out]
    return [
        (base + ["--image", str(root / "missing.png")], "missing.png: no such file"),
        (base + ["--video", str(root / "missing.gif")], "missing.gif: no such file or folder"),
        (base + ["--audio", str(root / "missing.wav")], "missing.wav: no such file"),
        (base + ["--image", str(text)], "not an image format"),
        (base + ["--video", str(text)], "notes.txt"),
        (base + ["--audio", str(text)], "not an audio file soundfile can read"),
        (base + ["--audio", str(short)], "too short"),
        (base + ["--video", str(root)], "must hold image frames"),
        (base, "nothing to encode"),
        (["--checkpoint", str(root / "nope"), "--image", str(files["png"]), "-o", out], "no such folder"),
        (["--checkpoint", str(root), "--image", str(files["png"]), "-o", out], "config.json"),
        (base + ["--image", str(files["png"]), "--grid", str(bad_grid)], "multiple of 4"),
        (base + ["--image", str(files["png"]), "--grid", str(root / "nogrid.yaml")], "nogrid.yaml"),
        (base + ["--image", str(files["png"]), "--max-pixels", "100"], "larger than max_pixels"),
        (["--checkpoint", str(ckpt), "--image", str(files["png"]), "-o", str(root / "no" / "o.safetensors")],
         "does not exist"),
        (["--checkpoint", str(ckpt), "--image", str(files["png"]), "--device", "cuda:99", "-o", out], "--device"),
    ]


def test_errors_exit_2_with_a_message(setup, capsys):
    root, ckpt, files = setup
    (root / "errors").mkdir()
    for argv, message in error_cases(root / "errors", ckpt, files):
        assert run_encode(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("omnienc encode: error: ") and message in err, (argv, err)
        assert "Traceback" not in err
    assert not (root / "errors" / "err.safetensors").exists()


@torch.no_grad()
def test_float_wav_encodes_and_corrupt_checkpoint_exits_2(setup, tmp_path, capsys):
    """A 32-bit float WAV (format 3, which the stdlib ``wave`` module refuses) is read by soundfile
    and encodes like the same samples given to ``AudioRequest.from_waveforms``."""
    from omnienc.runtime import AudioRequest

    _, ckpt, files = setup
    f32 = tmp_path / "float.wav"
    samples = (tone(0.3, 16000, seed=5) * 0.5).astype("<f4")
    data = samples.tobytes()
    header = (b"RIFF" + (36 + len(data)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
              + (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
              + (64000).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
              + b"data" + len(data).to_bytes(4, "little"))
    f32.write_bytes(header + data)
    out = str(tmp_path / "o.safetensors")
    assert run_encode(["--checkpoint", str(ckpt), "--audio", str(f32), "--device", "cpu", "--dtype", "float32",
                       "-o", out]) == 0
    capsys.readouterr()
    tensors, meta = read_output(out)
    req = AudioRequest.from_waveforms([samples], 16000, config=PreprocessConfig.from_checkpoint(ckpt))
    ref = AudioEncoder.from_pretrained(ckpt, dtype=torch.float32)(req.input_features, req.feature_lens.tolist())
    assert max_err(tensors["audio.0.embeds"], ref) <= TOL
    assert meta["audio.0.frames"] == str(len(samples) // 160)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((ckpt / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"garbage")
    assert run_encode(["--checkpoint", str(broken), "--image", str(files["png"]), "--device", "cpu", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err


# --- GPU: captured graphs and the float32 fallback (marked, skipped without CUDA) -----------------


@pytest.fixture(scope="module")
def gpu_checkpoint(tmp_path_factory):
    """Tiny encoders whose head sizes FlashAttention varlen takes (vision 16, audio 8)."""
    hf_v, _ = hf_and_native_vision(tiny_vision_config(hidden_size=64, intermediate_size=96))
    hf_a, _ = hf_and_native_audio()
    return write_checkpoint(tmp_path_factory.mktemp("gpu_ckpt"), hf_v, hf_a)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@torch.no_grad()
def test_encode_on_cuda(setup, gpu_checkpoint, tmp_path, capsys, dtype):
    """bf16 replays captured graphs; float32 runs eagerly with SDPA (varlen takes no fp32). Both match
    the native encoders run directly in float32 on the same GPU (whose float32 kernels differ from
    the CPU's by more than this tolerance: docs/BENCHMARKS.md)."""
    pytest.importorskip("soundfile", reason="encode reads the WAV with soundfile")
    _, _, files = setup
    ckpt = gpu_checkpoint
    grid = tmp_path / "grid.yaml"
    grid.write_text("vision:\n  patches: [256, 1024]\n  batch: [4]\naudio:\n  frames: [200, 500]\n  batch: [2]\n")
    out = tmp_path / "o.safetensors"
    argv = ["--checkpoint", str(ckpt), "--image", str(files["png"]), "--video", str(files["gif"]),
            "--audio", str(files["wav"]), "--grid", str(grid), "--device", "cuda", "--dtype", dtype,
            "--video-min-pixels", "2048", "--no-progress", "-o", str(out)]
    assert run_encode(argv) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert ("capture" in printed and "4 graphs" in printed) if dtype == "bfloat16" else "needs bfloat16" in printed
    tensors, _ = read_output(out)
    # The inputs preprocessed on the GPU, as encode does (their parity with the CPU's is
    # tests/test_preprocess.py's), so the comparison is the encoders' alone.
    pre = Preprocessor(PreprocessConfig.from_checkpoint(ckpt, video_min_pixels=2048), device="cuda")
    vis = VisionEncoder.from_pretrained(ckpt, dtype=torch.float32).cuda()
    aud = AudioEncoder.from_pretrained(ckpt, dtype=torch.float32).cuda()
    tol = 3e-2 if dtype == "bfloat16" else 1e-4
    for name, item in (("image.0", pre.image(files["png"])), ("video.0", pre.video(files["gif"]))):
        embeds, deepstack = vis(item.pixel_values, torch.tensor([item.grid_thw]))
        assert rel_err(tensors[f"{name}.embeds"], embeds.cpu()) <= tol
        assert all(rel_err(tensors[f"{name}.deepstack.{j}"], d.cpu()) <= tol for j, d in enumerate(deepstack))
    item = pre.audio(files["wav"])
    ref = aud(item.input_features, [item.frames]).cpu()
    assert rel_err(tensors["audio.0.embeds"], ref) <= tol
