"""What a new user hits at the boundary, on the CPU: hostile and huge media files, sizes nothing can
hold, output paths, start-up structure, the words of errors and summaries, and every numeric
option's bounds. Each bad input must end in a ValueError (API) or exit status 2 with one message
(command line) naming the item, option or file and the bound, before any work, with no traceback
and no partial output file."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import struct
import subprocess
import sys
import warnings
import wave
import zlib
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import hf_and_native_audio, hf_and_native_vision
from safetensors.torch import save_file

from omnienc.preprocess import (
    InputError,
    PreprocessConfig,
    PreprocessConfigError,
    Preprocessor,
    RawAudio,
    RawImages,
    load_image,
    read_audio,
    read_video_frames,
)
from omnienc.runtime import AudioRequest, BucketGrid, GridError, TraceError, VisionRequest, preprocess_requests
from omnienc.runtime.atomic import atomic_path
from omnienc.runtime.trace import read_trace, write_trace
from omnienc.tools import cli
from omnienc.tools.args import Bound, HelpFormatter, UsageError, check_output, progress_wanted
from omnienc.tools.tracegen import generate_trace

Image = pytest.importorskip("PIL.Image")


# --- files made at test time ------------------------------------------------------------------------


def png_claiming(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` RGB pixels but whose data holds a few rows: what a
    decompression bomb or a damaged file looks like before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(bytes(np.random.default_rng().integers(0, 256, 4 * (3 * 16 + 1), dtype=np.uint8)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def random_image(h: int, w: int):
    return Image.fromarray(np.random.default_rng().integers(0, 256, (h, w, 3), dtype=np.uint8))


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.round(samples * 32767).astype("<i2").tobytes())


def noise(seconds: float, rate: int) -> np.ndarray:
    return 0.3 * np.random.default_rng().standard_normal(round(seconds * rate))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {"photo": root / "photo.png", "speech": root / "speech.wav", "gif": root / "clip.gif",
             "empty": root / "empty.wav", "bomb": root / "bomb.png", "hugebomb": root / "huge.png"}
    random_image(37, 53).save(files["photo"])
    write_wav(files["speech"], noise(1.0, 16000), 16000)
    write_wav(files["empty"], np.zeros(0), 16000)
    frames = [random_image(30, 41) for _ in range(6)]
    frames[0].save(files["gif"], save_all=True, append_images=frames[1:], duration=200, loop=0)
    png_claiming(files["bomb"], 12_000, 12_000)  # above our limit, below Pillow's own refusal
    png_claiming(files["hugebomb"], 30_000, 30_000)  # above Pillow's refusal (twice its threshold)
    return root, files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint (config.json + model.safetensors) and a one-bucket grid, for fast encodes."""
    root = tmp_path_factory.mktemp("ckpt")
    hf_v, _ = hf_and_native_vision()
    hf_a, _ = hf_and_native_audio()
    ckpt = root / "ckpt"
    ckpt.mkdir()
    tensors = {f"thinker.visual.{k}": v.contiguous() for k, v in hf_v.state_dict().items()}
    tensors |= {f"thinker.audio_tower.{k}": v.contiguous() for k, v in hf_a.state_dict().items()}
    save_file(tensors, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({"thinker_config": {
        "vision_config": hf_v.config.to_dict(), "audio_config": hf_a.config.to_dict()}}))
    grid = root / "grid.yaml"
    grid.write_text("vision:\n  patches: [256]\n  batch: [2]\naudio:\n  frames: [200]\n  batch: [1]\n")
    return ckpt, grid


def omnienc(argv, capsys) -> tuple[int, str, str]:
    """Runs ``omnienc ARGV`` in this process as ``main`` does: status, stdout, stderr. argparse's
    own refusals (SystemExit 2) count as status 2."""
    try:
        with mock.patch.dict(os.environ):  # main may set TQDM_DISABLE for its own process
            status = cli.main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def refused(argv, capsys, *fragments) -> str:
    status, _, err = omnienc(argv, capsys)
    assert status == 2, (argv, err)
    assert "Traceback" not in err and err.strip(), (argv, err)
    for f in fragments:
        assert f in err, (argv, f, err)
    return err


# --- 1. hostile or huge media files -------------------------------------------------------------------


def test_image_headers_beyond_the_limit_are_refused_before_decoding(media, monkeypatch):
    _, files = media

    def decode(*_):
        raise AssertionError("decoding started before the header was checked")

    monkeypatch.setattr(Image.Image, "load", decode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own bomb warning must not leak
        with pytest.raises(InputError, match=r"bomb\.png: the header says the image is 12000x12000 "
                                             r"\(width x height\) = 144,000,000 pixels, above the limit of "
                                             r"89,478,485 .*source_pixel_limit"):
            load_image(files["bomb"])
        with pytest.raises(InputError, match=r"huge\.png: the header claims a size Pillow refuses"):
            load_image(files["hugebomb"])
        with pytest.raises(InputError, match=r"photo\.png: .*53x37 \(width x height\) = 1,961 pixels, above the "
                                             r"limit of 1,000"):
            load_image(files["photo"], PreprocessConfig(source_pixel_limit=1000))


def test_videos_beyond_the_limits_are_refused_before_decoding(media, tmp_path):
    _, files = media
    with pytest.raises(InputError, match=r"clip\.gif: .*frame is 41x30 \(width x height\) = 1,230 pixels, above "
                                         r"the limit of 1,000"):
        read_video_frames(files["gif"], PreprocessConfig(source_pixel_limit=1000))
    kept = len(read_video_frames(files["gif"])[1])
    with pytest.raises(InputError, match=rf"clip\.gif: {kept} frames of 41x30 \(width x height\) to keep "
                                         r".*video_pixel_limit"):
        read_video_frames(files["gif"], PreprocessConfig(video_pixel_limit=kept * 41 * 30 - 1))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        png_claiming(folder / f"{i:03d}.png", 12_000, 12_000)
    with pytest.raises(InputError, match=r"000\.png: the header says the frame is 12000x12000"):
        read_video_frames(folder)


def test_audio_headers_beyond_the_limit_and_empty_files(media):
    _, files = media
    with pytest.raises(InputError, match=r"speech\.wav: the header says 1\.0 s of audio, above the limit of 0\.5 s "
                                         r"\(PreprocessConfig\.audio_seconds_limit\)"):
        read_audio(files["speech"], PreprocessConfig(audio_seconds_limit=0.5))
    with pytest.raises(InputError, match=r"empty\.wav: the file holds no audio samples"):
        read_audio(files["empty"])


def test_out_of_memory_while_decoding_is_an_input_error(media, monkeypatch):
    _, files = media

    def no_memory(*_):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "load", no_memory)
    with pytest.raises(InputError, match=r"photo\.png: out of memory while decoding the image"):
        load_image(files["photo"])


def test_encode_refuses_hostile_files_with_status_2(media, capsys, tmp_path):
    _, files = media
    out = tmp_path / "o.safetensors"
    for f, words in (("bomb", "source_pixel_limit"), ("hugebomb", "Pillow refuses")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            err = refused(["encode", "--random-weights", "--device", "cpu", "--image", files[f], "-o", out],
                          capsys, words)
        assert "DecompressionBomb" not in err
    refused(["encode", "--random-weights", "--device", "cpu", "--audio", files["empty"], "-o", out], capsys,
            "holds no audio samples")
    assert not out.exists()


# --- 2. sizes nothing can hold --------------------------------------------------------------------------


def test_api_refuses_sizes_beyond_the_limits_before_work(monkeypatch):
    import omnienc.preprocess.audio as audio_mod
    import omnienc.preprocess.image as image_mod

    def work(*args, **kwargs):
        raise AssertionError("preprocessing started before validation finished")

    for mod, name in [(image_mod, "resize_bicubic"), (image_mod, "_write_patches"), (audio_mod, "resample"),
                      (audio_mod, "log_mel_frames")]:
        monkeypatch.setattr(mod, name, work)
    rng = np.random.default_rng()
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    small = PreprocessConfig(source_pixel_limit=40 * 60 - 1)
    with pytest.raises(ValueError, match=r"image 1: field 'size' is 40x60 \(height x width\) = 2,400 pixels, "
                                         r"above the limit of 2,399"):
        VisionRequest.from_images([img[:20], img], config=small)
    with pytest.raises(ValueError, match=r"max_pixels 100000000 is above the limit of 67108864 .*pixel_limit"):
        VisionRequest.from_images([img], max_pixels=10**8)
    frames = torch.from_numpy(rng.integers(0, 256, (8, 40, 60, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"frames: field 'shape' keeps 8 frames .*video_pixel_limit"):
        VisionRequest.from_video(frames, config=PreprocessConfig(video_pixel_limit=8 * 40 * 60 - 1, min_pixels=1,
                                                                 video_min_pixels=1))
    with pytest.raises(ValueError, match=r"frames: field 'size' is 40x60 .*source_pixel_limit"):
        VisionRequest.from_video(frames, config=small)
    wave_ = rng.standard_normal(16000).astype(np.float32)
    short = PreprocessConfig(audio_seconds_limit=0.5)
    with pytest.raises(ValueError, match=r"waveform 1: field 'length' is 16,000 samples at 16000 Hz = 1\.0 s, "
                                         r"above the limit of 0\.5 s"):
        AudioRequest.from_waveforms([wave_[:8000], wave_], config=short)
    with pytest.raises(ValueError, match=r"waveform 0: field 'length' .* at 1000 Hz .*limit of 0\.5 s"):
        AudioRequest.from_waveforms([wave_[:1000]], 1000, config=short)  # 1 s, 16x the samples at 16 kHz
    with pytest.raises(ValueError, match=r"item 1: image 0: field 'size' .*source_pixel_limit"):
        preprocess_requests([RawAudio([wave_], 16000), RawImages([img])], config=small)


def test_config_bounds_its_budgets():
    with pytest.raises(PreprocessConfigError, match=r"max_pixels 100000000 is above pixel_limit 67108864"):
        PreprocessConfig(max_pixels=10**8)
    with pytest.raises(PreprocessConfigError, match=r"video_max_pixels .* above pixel_limit"):
        PreprocessConfig(video_max_pixels=10**8)
    with pytest.raises(PreprocessConfigError, match=r"max_frames 100000 is above frame_limit 8192"):
        PreprocessConfig(max_frames=100_000)
    assert PreprocessConfig(max_pixels=10**8, pixel_limit=10**8).max_pixels == 10**8  # raised where a machine can
    for bad in ("100", 2.5, True, -3):
        with pytest.raises(PreprocessConfigError, match=r"max_frames is .*positive integer"):
            PreprocessConfig(max_frames=bad)


def test_encode_bounds_the_pixel_options(media, capsys, tmp_path):
    _, files = media
    base = ["encode", "--random-weights", "--device", "cpu", "--image", files["photo"],
            "-o", tmp_path / "o.safetensors"]
    refused(base + ["--max-pixels", 10**10], capsys, "--max-pixels 10000000000 is out of range: 1 to 67108864 pixels",
            "pixel_limit")
    refused(base + ["--video-max-pixels", 0], capsys, "--video-max-pixels 0 is out of range")
    refused(base + ["--max-frames", 10**6], capsys, "--max-frames 1000000 is out of range: 1 to 8192")


# --- 3. output paths ------------------------------------------------------------------------------------


def test_outputs_never_overwrite_an_input(media, checkpoint, capsys, tmp_path):
    root, files = media
    ckpt, grid = checkpoint
    weights = (ckpt / "model.safetensors").read_bytes()
    refused(["encode", "--checkpoint", ckpt, "--image", files["photo"], "-o", ckpt / "model.safetensors"], capsys,
            "is also this command's input (--checkpoint")
    assert (ckpt / "model.safetensors").read_bytes() == weights
    refused(["encode", "--checkpoint", ckpt, "--image", files["photo"], "-o", tmp_path / "o.safetensors",
             "--trace", tmp_path / "o.safetensors"], capsys, "--trace", ".jsonl")
    trace = tmp_path / "trace.jsonl"
    write_trace(trace, generate_trace(2, 10, 1))
    before = trace.read_text()
    refused(["tune", "--trace", trace, "-o", trace], capsys, "must end in .yaml")
    refused(["tune", "--trace", trace, "--base", grid, "-o", grid], capsys, "is also this command's input (--base")
    link = tmp_path / "same.yaml"
    link.symlink_to(grid)  # the same file under another name
    refused(["tune", "--trace", trace, "--base", grid, "-o", link], capsys, "is also this command's input (--base")
    refused(["capture", "--calibrate", "--device", "cpu", "--grid", grid, "-o", grid], capsys, "(--grid")
    assert trace.read_text() == before and grid.read_text().startswith("vision:")


@pytest.mark.parametrize("argv, words", [
    (["encode", "--random-weights", "--image", "{photo}", "-o", "{root}/out.npz"],
     "must end in .safetensors, not .npz"),
    (["encode", "--random-weights", "--image", "{photo}", "-o", "{root}"], "is a folder"),
    (["tracegen", "-o", "{root}/trace.txt"], "must end in .jsonl"),
    (["tune", "--trace", "{root}/t.jsonl", "-o", "{root}/grid.json"], "must end in .yaml or .yml"),
    (["capture", "--calibrate", "-o", "{root}/costs.txt"], "must end in .yaml or .yml"),
    (["capture", "-o", "{root}/costs.yaml"], "add --calibrate"),
])
def test_output_extensions_are_checked(argv, words, media, capsys):
    root, files = media
    refused([a.format(root=root, photo=files["photo"]) for a in argv], capsys, words)


def test_atomic_path_leaves_the_old_file_or_nothing(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old\n")

    def records():
        yield from generate_trace(1, 20, 3)
        raise RuntimeError("the generator failed midway")

    with pytest.raises(RuntimeError):
        write_trace(target, records())
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    g = BucketGrid.default()
    g.to_yaml(tmp_path / "g.yaml")
    assert BucketGrid.from_yaml(tmp_path / "g.yaml") == g and len(list(tmp_path.iterdir())) == 2


def test_a_failed_encode_leaves_no_partial_file(media, checkpoint, capsys, tmp_path, monkeypatch):
    """The write fails halfway: no output, no temporary file, and an existing output untouched.
    A CPU run without --dtype runs in float32 and says so; no graph is said to be replayed."""
    import safetensors.torch

    _, files = media
    ckpt, grid = checkpoint
    out = tmp_path / "o.safetensors"
    argv = ["encode", "--checkpoint", ckpt, "--grid", grid, "--device", "cpu", "--image", files["photo"],
            "--audio", files["speech"], "-o", out]
    status, printed, _ = omnienc(argv, capsys)
    assert status == 0 and out.is_file()
    assert "float32 (the CPU's default" in printed and "graph replay" not in printed and "eager: no graphs" in printed
    good = out.read_bytes()
    real = safetensors.torch.save_file

    def half(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:
            f.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half)
    refused(argv, capsys, "cannot write", "nothing was written")
    assert out.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["o.safetensors"]

    from omnienc.runtime.runtime import EncoderRuntime

    def too_big(self, requests):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 412316860416 bytes")

    monkeypatch.setattr(EncoderRuntime, "encode", too_big)
    refused(argv, capsys, "out of memory while encoding on cpu", "the largest item: image", "--max-pixels")
    assert out.read_bytes() == good


# --- 4. start-up ----------------------------------------------------------------------------------------


def test_start_up_imports_only_what_it_needs():
    """``omnienc --help`` and every subcommand's help import neither torch nor transformers;
    importing the runtime does not import transformers."""
    code = """
import sys
from omnienc.tools import cli
for name in cli.COMMANDS:
    cli.build_parser([name]).format_help()
cli.build_parser([]).format_help()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "numpy"} - {"numpy"})
assert not heavy, heavy
from omnienc.runtime import EncoderRuntime
from omnienc.encoders import VisionEncoder, AudioEncoder
assert "torch" in sys.modules and "transformers" not in sys.modules, [m for m in sys.modules if "transformers" in m][:5]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr



def test_lazy_names_are_never_shadowed_by_submodules():
    """Importing a submodule sets it as an attribute of the package: a lazy name equal to a
    submodule's name would then return the module instead of the object, depending on import order."""
    import pkgutil

    import omnienc.runtime as package

    submodules = {m.name for m in pkgutil.iter_modules(package.__path__)}
    assert not set(package._LAZY) & submodules
    for module in submodules - {"calibrate"}:
        importlib.import_module(f"omnienc.runtime.{module}")
    for name in package.__all__:
        assert not isinstance(getattr(package, name), type(package)), name

# --- 5. words -------------------------------------------------------------------------------------------


def subcommands():
    """(name, parser) of each subcommand this file covers, as its module's ``register`` builds it."""
    for name in ("demo", "capture", "encode", "simulate", "tune", "tracegen"):
        sub = argparse.ArgumentParser(prog="omnienc", formatter_class=HelpFormatter).add_subparsers()
        yield name, importlib.import_module(f"omnienc.tools.{name}").register(sub)


def test_errors_name_the_real_cause(media, checkpoint, capsys, tmp_path):
    root, files = media
    ckpt, _ = checkpoint
    out = tmp_path / "o.safetensors"
    refused(["encode", "--random-weights", "--image", root, "-o", out], capsys, f"--image {root}: is a folder")
    refused(["encode", "--random-weights", "--audio", root, "-o", out], capsys, "is a folder; name an audio file")
    refused(["encode", "--checkpoint", ckpt / "config.json", "--image", files["photo"], "-o", out], capsys,
            "is a file; name the checkpoint's folder")
    refused(["capture", "--device", "gpu"], capsys, "--device 'gpu' is not a device; pass cuda, cuda:N or cpu")
    refused(["simulate", "--trace", "t.jsonl", "--device", "cpu"], capsys, "add --measure")
    if not torch.cuda.is_available():
        for argv in (["capture"], ["capture", "--calibrate", "-o", tmp_path / "c.yaml"],
                     ["simulate", "--trace", "t.jsonl", "--measure"], ["demo"]):
            refused([*argv, "--device", "cuda"], capsys, "--device cuda")
    for empty in (np.zeros((1, 0), np.float32), torch.zeros(2, 0)):
        with pytest.raises(ValueError, match=r"waveform 0: field 'shape' is .*: the waveform has no samples"):
            AudioRequest.from_waveforms([empty])
    with pytest.raises(TraceError, match="is a folder"):
        read_trace(root)
    with pytest.raises(GridError, match="is a folder"):
        BucketGrid.from_yaml(root)


def test_measure_compares_only_like_with_like():
    from omnienc.runtime import CostModel
    from omnienc.runtime.costs import card_note

    h200, here = CostModel.load(), "CPU (x86_64, 2 threads)"
    assert "not a forecast" in card_note(h200, here) and "--calibrate" in card_note(h200, here)
    assert card_note(h200, h200.meta["card"]) is None
    cpu = CostModel.from_probes({k: s.probes for k, s in h200.surfaces.items()}, card=here)
    assert card_note(cpu, here) is None and card_note(cpu, "NVIDIA H100 80GB HBM3") is not None


def test_help_is_plain_and_wraps_between_words(monkeypatch):
    """No docstring markup, and no option, path or number split across lines, even at 50 columns."""
    monkeypatch.setenv("COLUMNS", "50")
    for name, sub in subcommands():
        text = sub.format_help()
        assert "`" not in text and "**" not in text, name
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, (name, flag)
        assert not any(line.rstrip().endswith("-") for line in text.splitlines()), name
    assert "`" not in HelpFormatter("x")._fill_text("run ``omnienc tune`` or `omnienc replay`", 40, "")


def test_progress_bars_only_on_a_terminal(monkeypatch, capsys):
    """Output to a log file (stderr not a terminal): our bars are not asked for, and ``omnienc`` turns
    tqdm off for the whole process (bars drawn by code it calls included), unless the user chose."""
    assert not sys.stderr.isatty() and not progress_wanted() and not progress_wanted(True)
    with mock.patch.dict(os.environ, clear=False):
        os.environ.pop("TQDM_DISABLE", None)
        assert cli.main(["tracegen", "-o", "bad.txt"]) == 2
        assert os.environ["TQDM_DISABLE"] == "1"
        os.environ["TQDM_DISABLE"] = "0"
        cli.main(["tracegen", "-o", "bad.txt"])
        assert os.environ["TQDM_DISABLE"] == "0"
    capsys.readouterr()


# --- 6. arguments ---------------------------------------------------------------------------------------


BAD_NUMBERS = [  # (command line, what the message says)
    (["demo", "--repeats", -1], "--repeats -1 is out of range: 1 to 10000"),
    (["demo", "--repeats", 0], "--repeats 0 is out of range"),
    (["capture", "--repeats", 10**9], "--repeats 1000000000 is out of range: 1 to 10000"),
    (["capture", "--warmup", -2], "--warmup -2 is out of range: 0 to 10000"),
    (["encode", "--random-weights", "--image", "x.png", "-o", "o.safetensors", "--video-fps", -1], "--video-fps -1"),
    (["encode", "--random-weights", "--image", "x.png", "-o", "o.safetensors", "--min-pixels", -5], "--min-pixels -5"),
    (["simulate", "--trace", "t.jsonl", "--max-wait-ms", -1], "--max-wait-ms -1 is out of range: 0 to 60000 ms"),
    (["simulate", "--trace", "t.jsonl", "--max-batch", 10**7], "--max-batch 10000000 is out of range: 1 to 100000"),
    (["simulate", "--trace", "t.jsonl", "--quiet-ms", 1e9], "--quiet-ms 1000000000 is out of range: at most 60000"),
    (["tune", "--trace", "t.jsonl", "-o", "g.yaml", "--max-graphs", 10**6], "--max-graphs 1000000 is out of range"),
    (["tune", "--trace", "t.jsonl", "-o", "g.yaml", "--max-graph-memory", 0], "above 0, up to 1024 GB"),
    (["tracegen", "-o", "t.jsonl", "--seconds", 0], "--seconds 0 is out of range: above 0"),
    (["tracegen", "-o", "t.jsonl", "--rate", -3], "--rate -3 is out of range"),
    (["tracegen", "-o", "t.jsonl", "--seed", -1], "--seed -1 is out of range"),
    (["tracegen", "-o", "t.jsonl", "--seconds", 1e6, "--rate", 1e5], "requests expected, above the 10,000,000"),
]
NOT_NUMBERS = [
    (["demo", "--repeats", "ten"], "'ten' is not a whole number"),
    (["demo", "--repeats", "2.5"], "'2.5' is not a whole number"),
    (["tracegen", "-o", "t.jsonl", "--rate", "nan"], "'nan' is not a finite number"),
    (["tracegen", "-o", "t.jsonl", "--seconds", "inf"], "'inf' is not a finite number"),
    (["encode", "--random-weights", "--image", "x.png", "-o", "o.safetensors", "--video-fps", "2fps"],
     "'2fps' is not a number"),
]


@pytest.mark.parametrize("argv, words", BAD_NUMBERS + NOT_NUMBERS, ids=[" ".join(map(str, a[:3])) for a, _ in
                                                                       BAD_NUMBERS + NOT_NUMBERS])
def test_numeric_options_are_bounded(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(argv, capsys, words)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_every_numeric_option_has_a_bound():
    """Each int or float option of the subcommands declares its range (shown in its help)."""
    for name, sub in subcommands():
        bounds = sub.get_default("_bounds") or {}
        for action in sub._actions:
            if action.type is not None and action.type not in (str,):
                assert action.dest in bounds, (name, action.dest)
    assert Bound("--x", 0, 10).describe() == "0 to 10" and Bound("--x", hi=5).describe() == "at most 5"
    with pytest.raises(UsageError, match=r"--x 11 is out of range: 0 to 10 ms \(why\)"):
        Bound("--x", 0, 10, unit="ms", why="why").check(11)


def test_empty_grid_and_trace_files_are_refused(capsys, tmp_path):
    empty_grid, comments, trace, blank = (tmp_path / n for n in ("g.yaml", "c.yaml", "t.jsonl", "b.jsonl"))
    empty_grid.write_text("")
    comments.write_text("# nothing here\n")
    trace.write_text("")
    blank.write_text("\n\n")
    for g in (empty_grid, comments):
        with pytest.raises(GridError, match="the file is empty"):
            BucketGrid.from_yaml(g)
    with pytest.raises(TraceError, match=r"holds no requests \(empty\)"):
        read_trace(trace)
    with pytest.raises(TraceError, match=r"holds no requests \(only blank lines\)"):
        read_trace(blank)
    good = tmp_path / "good.jsonl"
    write_trace(good, generate_trace(2, 10, 0))
    refused(["simulate", "--trace", trace], capsys, "holds no requests")
    refused(["simulate", "--trace", good, "--grid", empty_grid], capsys, "the file is empty")
    refused(["tune", "--trace", blank, "-o", tmp_path / "out.yaml"], capsys, "holds no requests")
    assert not (tmp_path / "out.yaml").exists()
    from omnienc.runtime.tune import tune

    with pytest.raises(ValueError, match="the trace is empty"):
        tune([])


def test_api_arguments_of_the_wrong_type(tmp_path):
    rng = np.random.default_rng()
    wave_ = rng.standard_normal(16000).astype(np.float32)
    with pytest.raises(ValueError, match=r"sampling_rate is the string '16000'"):
        AudioRequest.from_waveforms([wave_], "16000")
    with pytest.raises(ValueError, match=r"waveform 1: field 'sampling_rate' must be .* got the string '8000'"):
        AudioRequest.from_waveforms([wave_, wave_], [16000, "8000"])
    req = AudioRequest.from_waveforms([wave_, wave_], np.array([16000, 16000]))  # numpy rates are numbers
    assert req.feature_lens.tolist() == [100, 100]
    frames = torch.from_numpy(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"fps is '30'"):
        VisionRequest.from_video(frames, fps="30")
    assert VisionRequest.from_video(frames, fps=np.int64(2)).grid_thw.shape == (1, 3)
    for path in ("photo.png", tmp_path / "photo.png"):
        with pytest.raises(ValueError, match=r"image 0: field 'type' .* got \w+ \(a file name\? .*load_image\)"):
            VisionRequest.from_images(path)
    with pytest.raises(ValueError, match=r"waveform 0: field 'type' .* got str \(a file name\? .*read_audio\)"):
        AudioRequest.from_waveforms("speech.wav")
    with pytest.raises(ValueError, match=r"max_pixels is '5000'"):
        VisionRequest.from_images([frames[0]], max_pixels="5000")
    with pytest.raises(ValueError, match=r"rate=0"):
        generate_trace(10, 0)
    with pytest.raises(ValueError, match=r"requests expected, above the 10,000,000 .*iter_trace"):
        generate_trace(1e6, 1e5)
    with pytest.raises(InputError, match="is a folder"):
        Preprocessor(PreprocessConfig()).audio(tmp_path)


def test_check_output_refuses_missing_folders(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        check_output("-o", tmp_path / "no" / "x.yaml", (".yaml",))
    assert check_output("-o", tmp_path / "x.YAML", (".yaml",)).name == "x.YAML"
