"""``omnienc encode``: preprocess files, encode them through the bucketed runtime, write safetensors.

    omnienc encode (--checkpoint DIR | --random-weights) [--image F]... [--video F]... [--audio F]... \\
        [--grid G.yaml] [--device cuda|cpu] [--dtype bfloat16|float16|float32] -o OUT.safetensors

Every input is decoded (Pillow, PyAV, soundfile) and preprocessed first, on ``--device``, by
``omnienc.preprocess`` (Qwen3-Omni's image, video and audio preprocessing in torch, configured from
the checkpoint; parity with transformers' processors is tested), so a bad file fails before any
weights load. Then the encoders a modality needs are loaded (``--random-weights``: random weights
at the real sizes on a GPU, reduced sizes on a CPU, no checkpoint needed), the runtime is built on
the grid (the packaged one by default; its dtype unless ``--dtype``, except on the CPU, where the
default is float32 as for ``demo`` and ``capture``: the CPU's bf16 kernels are slow and less exact,
and the grid's dtype is for CUDA graphs) and its CUDA graphs captured,
and all items are encoded in one call, one request per item. Graphs need FlashAttention varlen (CUDA, bf16/fp16,
head sizes multiples of 8); otherwise -- on the CPU, or float32 on CUDA (attention then runs with
SDPA) -- the same buckets run eagerly and nothing is captured.

Output, for the k-th item of each kind (k counts from 0 in command-line order):
    ``image.{k}.embeds`` ``[t*h*w/4, out_hidden]``, ``image.{k}.deepstack.{j}`` (same shape, one per
    DeepStack layer), the same under ``video.{k}.``, and ``audio.{k}.embeds`` ``[tokens, output_dim]``.
Metadata (strings; lists and numbers as JSON): ``{kind}.{k}.source``, ``.grid_thw``, ``.tokens``,
``.size`` and ``.resized`` ([height, width] in pixels); for videos ``.frames`` (before the odd-count
padding) and ``.frame_indices``; for audio ``.frames`` (mel frames), ``.seconds``, ``.sample_rate``,
``.channels``. Also ``format``, ``checkpoint`` (or ``random-weights:real|reduced``), ``dtype``,
``vision.out_hidden_size``,
``vision.deepstack_layers``, ``audio.output_dim``, the item counts and ``preprocess`` (the
preprocessing settings).

The output is written whole or not at all (a temporary file renamed into place), never over one of
the command's inputs, and must end in ``.safetensors``.

Exit status 0, or 2 with a message on stderr for a bad argument, checkpoint, grid or input file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from omnienc.preprocess.config import FRAME_LIMIT, PIXEL_LIMIT, InputError, PreprocessConfigError
from omnienc.tools.args import HelpFormatter, UsageError, add_number, check_input_file, check_output, command

FORMAT = "omnienc.encode/1"
DTYPES = ("bfloat16", "float16", "float32")  # runtime.grid.DTYPES, written out: importing it costs --help ~0.2 s
_PIXEL_WHY = ("PreprocessConfig.pixel_limit, 8192 x 8192: 262144 patches of 16 px, the runtime grid's largest "
              "bucket size")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds the ``encode`` subcommand; its ``func`` default is :func:`run`."""
    p = subparsers.add_parser(
        "encode", help="encode images, videos and audio files into a safetensors file",
        formatter_class=HelpFormatter,
        description="Preprocess files as Qwen3-Omni does, run them through the bucketed encoder runtime\n"
        "and write each item's embeddings (and DeepStack features) to a safetensors file.\n\n"
        "example: omnienc encode --random-weights --image photo.jpg --audio speech.flac -o out.safetensors")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR",
                     help="Qwen3-Omni checkpoint folder (config.json and safetensors shards)")
    src.add_argument("--random-weights", action="store_true",
                     help="no checkpoint: random weights, real sizes on a GPU and reduced sizes on a CPU "
                     "(embeddings are meaningless; for trying the pipeline)")
    p.add_argument("--image", action="append", default=[], metavar="FILE", help="an image (repeatable)")
    p.add_argument("--video", action="append", default=[], metavar="PATH",
                   help="a video: animated GIF/APNG/WebP, a folder of frames, or mp4 etc. with PyAV (repeatable)")
    p.add_argument("--audio", action="append", default=[], metavar="FILE",
                   help="an audio file: WAV (PCM, float, extensible), FLAC, OGG, ... (repeatable)")
    p.add_argument("--grid", default=None, metavar="YAML", help="bucket grid (default: the packaged grid)")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:N or cpu, for preprocessing and encoding (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="weights and activations (default: float32 on a CPU, else the grid's dtype)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.safetensors",
                   help="where to write the embeddings (a new .safetensors file, or one to replace; never an input)")
    p.add_argument("--trace", default=None, metavar="FILE.jsonl",
                   help="append every encoded request's shape to this JSONL trace, for omnienc simulate and "
                   "omnienc tune (format: see omnienc simulate --help)")
    g = p.add_argument_group("preprocessing (defaults: Qwen3-Omni's, sizes from the encoders' configs)")
    pixels = dict(kind=int, lo=1, hi=PIXEL_LIMIT, unit="pixels", why=_PIXEL_WHY, default=None, metavar="N")
    add_number(g, "--min-pixels", **pixels, help="image pixel floor after resizing (default 3136)")
    add_number(g, "--max-pixels", **pixels,
               help="image pixel cap after resizing (default 1280 output tokens: 1310720 for patch 16)")
    add_number(g, "--video-min-pixels", **pixels,
               help="per-frame pixel floor (default 128 tokens: 131072 for patch 16)")
    add_number(g, "--video-max-pixels", **pixels,
               help="per-frame pixel cap (default 768 tokens: 786432 for patch 16)")
    add_number(g, "--video-fps", kind=float, lo=0, hi=1000, unit="frames per second", default=None, metavar="FPS",
               help="frames sampled per second of a timed video (default 2; 0 keeps every frame)")
    add_number(g, "--max-frames", kind=int, lo=1, hi=FRAME_LIMIT, unit="frames", default=None, metavar="N",
               why="PreprocessConfig.frame_limit", help="most frames per video (default 768)")
    p.add_argument("--no-progress", action="store_true",
                   help="no capture progress bar (it is drawn only when stderr is a terminal)")
    p.set_defaults(func=command("encode", run))
    return p


def _error(message: str) -> int:
    print(f"omnienc encode: error: {message}", file=sys.stderr)
    return 2


def _device(name: str | None):
    """The ``--device`` to preprocess and encode on; an unindexed ``cuda`` becomes the current GPU
    (the encoders' parameters report an indexed device)."""
    import torch

    from .models import device_from_arg

    try:
        device = device_from_arg(name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _inputs(args) -> list[tuple[str, object]]:
    """Every file this command reads, as (flag, path): the media, the grid, the checkpoint's files."""
    files = [(flag, p) for flag, paths in (("--image", args.image), ("--video", args.video), ("--audio", args.audio))
             for p in paths]
    files.append(("--grid", args.grid))
    if args.checkpoint is not None and Path(args.checkpoint).is_dir():
        files += [("--checkpoint", p) for p in sorted(Path(args.checkpoint).iterdir()) if p.is_file()]
    return files


def _check_paths(args) -> None:
    if not (args.image or args.video or args.audio):
        raise UsageError("nothing to encode; pass at least one --image, --video or --audio")
    if args.checkpoint is not None:
        if Path(args.checkpoint).is_file():
            raise UsageError(f"--checkpoint {args.checkpoint}: is a file; name the checkpoint's folder "
                             "(config.json and safetensors shards)")
        if not Path(args.checkpoint).is_dir():
            raise UsageError(f"--checkpoint {args.checkpoint}: no such folder")
    inputs = _inputs(args)
    check_output("-o", args.output, (".safetensors",), inputs)
    if args.trace is not None:  # appended to, so it must not be an input or the output either
        check_output("--trace", args.trace, (".jsonl",), inputs + [("-o", args.output)])
    for flag, paths in (("--image", args.image), ("--audio", args.audio)):
        for p in paths:
            try:
                check_input_file(flag, p, "an image file" if flag == "--image" else "an audio file")
            except UsageError as e:
                raise InputError(str(e)) from None
    for p in args.video:
        if not Path(p).exists():
            raise InputError(f"--video {p}: no such file or folder")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _sizes(device) -> str:
    """Model sizes of ``--random-weights``: the real ones on a GPU, reduced ones on a CPU."""
    return "real" if device.type == "cuda" else "reduced"


def _load_encoders(args, device, dtype):
    """The encoders this run needs (from the checkpoint, or random at ``_sizes(device)``).

    Returns:
        (vision or None, audio or None).
    """
    import torch

    from omnienc.encoders import AudioEncoder, CheckpointError, VisionEncoder, WeightLoadError

    want_vision, want_audio = bool(args.image or args.video), bool(args.audio)
    if args.random_weights:
        from .models import real_configs, reduced_configs

        vcfg, acfg = real_configs() if _sizes(device) == "real" else reduced_configs()
        with torch.device(device):
            vision = VisionEncoder(vcfg).to(dtype).eval() if want_vision else None
            audio = AudioEncoder(acfg).to(dtype).eval() if want_audio else None
        return vision, audio
    vision = audio = None
    try:
        if want_vision:
            vision = VisionEncoder.from_pretrained(args.checkpoint, dtype=dtype, device=device)
        if want_audio:
            audio = AudioEncoder.from_pretrained(args.checkpoint, dtype=dtype, device=device)
    except (CheckpointError, WeightLoadError):
        raise
    except (ValueError, TypeError, ZeroDivisionError) as e:  # a config the encoders refuse
        raise CheckpointError(f"{args.checkpoint}: the encoder config is not usable ({e})") from None
    return vision, audio


def _preprocess_config(args, device):
    """Sizes from the checkpoint's configs (or the random encoders' configs), the pixel budgets and
    frame sampling from the command line."""
    from omnienc.preprocess import PreprocessConfig
    overrides = {"min_pixels": args.min_pixels, "max_pixels": args.max_pixels,
                 "video_min_pixels": args.video_min_pixels, "video_max_pixels": args.video_max_pixels,
                 "video_fps": args.video_fps, "max_frames": args.max_frames}
    if args.random_weights:
        from .models import real_configs, reduced_configs

        vcfg, acfg = real_configs() if _sizes(device) == "real" else reduced_configs()
        return PreprocessConfig.from_configs(vcfg, acfg, **overrides)
    return PreprocessConfig.from_checkpoint(args.checkpoint, vision=bool(args.image or args.video),
                                            audio=bool(args.audio), **overrides)


def _collect(items, outputs, vision, audio) -> tuple[dict, dict, dict, dict]:
    """Output tensors and per-item metadata, named ``{kind}.{k}.*``; item counts and tokens per kind."""
    tensors: dict = {}
    meta: dict[str, str] = {}
    counts = {"image": 0, "video": 0, "audio": 0}
    tokens = dict.fromkeys(counts, 0)
    for (kind, item), out in zip(items, outputs):
        name = f"{kind}.{counts[kind]}"
        counts[kind] += 1
        tensors[f"{name}.embeds"] = out.embeds.detach().to("cpu").contiguous()
        if kind == "audio":
            meta[f"{name}.frames"] = str(item.frames)
        else:
            for j, ds in enumerate(out.deepstack):
                tensors[f"{name}.deepstack.{j}"] = ds.detach().to("cpu").contiguous()
            meta[f"{name}.grid_thw"] = json.dumps(list(item.grid_thw))
        tokens[kind] += out.embeds.shape[0]
        meta[f"{name}.tokens"] = str(out.embeds.shape[0])
        for key, value in item.meta.items():
            meta[f"{name}.{key}"] = value if isinstance(value, str) else json.dumps(value)
    for kind, n in counts.items():
        meta[f"{kind}.count"] = str(n)
    if vision is not None:
        meta["vision.out_hidden_size"] = str(vision.config.out_hidden_size)
        meta["vision.deepstack_layers"] = str(len(vision.deepstack_visual_indexes))
        meta["vision.deepstack_visual_indexes"] = json.dumps(vision.deepstack_visual_indexes)
    if audio is not None:
        meta["audio.output_dim"] = str(audio.config.output_dim)
    return tensors, meta, counts, tokens


def _largest(items) -> str:
    """The item with the most encoder input rows, in words, for an out-of-memory message."""
    def rows(item):
        return item[1].frames if item[0] == "audio" else item[1].grid_thw[0] * item[1].grid_thw[1] * item[1].grid_thw[2]

    kind, item = max(items, key=rows)
    unit = "mel frames" if kind == "audio" else "patches"
    return f"the largest item: {kind} {item.meta['source']}, {rows((kind, item)):,} {unit}"


def _free_bytes(device) -> int | None:
    """Memory free on ``device`` now (None where it cannot be told: no bound)."""
    import os

    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _dtype_name(args, device, grid) -> tuple[str, str]:
    """The dtype to run in and why (said in the summary)."""
    if args.dtype:
        return args.dtype, "--dtype"
    if device.type == "cpu":
        return "float32", "the CPU's default: its bfloat16 kernels are slow and less exact; --dtype to choose"
    return grid.dtype, "the grid's dtype"


def run(args: argparse.Namespace) -> int:
    """Runs ``omnienc encode``; returns 0, or 2 on bad input (message on stderr)."""
    import torch
    from safetensors.torch import save_file

    from omnienc.encoders import CheckpointError, WeightLoadError
    from omnienc.preprocess import Preprocessor
    from omnienc.runtime import AudioRequest, BucketGrid, EncoderRuntime, RuntimeConfig, VisionRequest
    from omnienc.runtime.atomic import atomic_path
    from omnienc.runtime.grid import GridError

    from .args import progress_wanted
    from .models import DTYPES as TORCH_DTYPES

    t_start = time.perf_counter()
    try:
        _check_paths(args)
        device = _device(args.device)
        grid = BucketGrid.default() if args.grid is None else BucketGrid.from_yaml(args.grid)
        dtype_name, dtype_why = _dtype_name(args, device, grid)
        cfg = _preprocess_config(args, device)
        pre = Preprocessor(cfg, device=device)
        items = ([("image", pre.image(p)) for p in args.image] + [("video", pre.video(p)) for p in args.video]
                 + [("audio", pre.audio(p)) for p in args.audio])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_pre = time.perf_counter()
        vision, audio = _load_encoders(args, device, TORCH_DTYPES[dtype_name])
        t_load = time.perf_counter()
        try:
            # Graphs when the attention can be captured (bf16/fp16 FlashAttention varlen), else eager.
            # A command of its own: one uncaptured call may take what the device has free (an engine
            # sharing the device bounds it lower, RuntimeConfig.max_transient_bytes).
            runtime = EncoderRuntime(vision=vision, audio=audio, grid=grid, device=device, trace_path=args.trace,
                                     config=RuntimeConfig(max_transient_bytes=_free_bytes(device)))
        except ValueError as e:  # e.g. a grid whose audio chunking differs from the encoder's
            raise GridError(f"cannot build the runtime for this grid and checkpoint: {e}") from None
    except (UsageError, InputError, PreprocessConfigError, CheckpointError, WeightLoadError, GridError) as e:
        return _error(str(e))

    graphs = runtime.capture(progress=progress_wanted(not args.no_progress))["graphs"] if runtime.use_cuda_graphs else 0
    t_capture = time.perf_counter()
    requests = [
        AudioRequest(item.input_features, torch.tensor([item.frames])) if kind == "audio"
        else VisionRequest(item.pixel_values, torch.tensor([item.grid_thw]))
        for kind, item in items
    ]
    try:
        outputs = runtime.encode(requests)
    except ValueError as e:  # request validation: preprocessing and encoder disagree
        return _error(f"the runtime refused a preprocessed input: {e}")
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, (MemoryError, torch.OutOfMemoryError)) and "allocate" not in str(e):
            raise
        return _error(f"out of memory while encoding on {device} ({_largest(items)}); lower --max-pixels, "
                      "--video-max-pixels or --max-frames, or encode the largest files alone")
    finally:
        runtime.close()  # flushes and closes the trace
    tensors, meta, counts, tokens = _collect(items, outputs, vision, audio)
    t_encode = time.perf_counter()
    source = f"random-weights:{_sizes(device)}" if args.random_weights else str(args.checkpoint)
    meta |= {"format": FORMAT, "checkpoint": source, "dtype": dtype_name,
             "preprocess": json.dumps(cfg.to_dict())}
    try:
        with atomic_path(args.output) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OSError as e:
        return _error(f"-o {args.output}: cannot write ({e}); nothing was written")

    stats = runtime.stats()
    parts = [f"{_plural(counts[k], k)} ({_plural(tokens[k], 'token')})" for k in counts if counts[k]]
    print(f"encoded {', '.join(parts)} -> {args.output}")
    setup = (f"capture {t_capture - t_load:.2f}s ({_plural(graphs, 'graph')})" if runtime.use_cuda_graphs
             else f"runtime {t_capture - t_load:.2f}s (no CUDA graphs: "
             f"{'FlashAttention varlen needs bfloat16 or float16, got ' + dtype_name if device.type == 'cuda' else 'not on CUDA'}; "
             "buckets run eagerly)")
    if args.random_weights:
        print(f"  random weights at the {_sizes(device)} model sizes: the embeddings only show the pipeline works")
    print(f"  device {device}, {dtype_name} ({dtype_why}); preprocess {t_pre - t_start:.2f}s, "
          f"load {t_load - t_pre:.2f}s, {setup}, encode {t_encode - t_capture:.2f}s")
    # Without CUDA graphs a graph bucket's run is its bucket code run eagerly: no graph is replayed.
    graph_runs = (_plural(stats['replays'], 'graph replay') if runtime.use_cuda_graphs
                  else _plural(stats['replays'], 'graph-bucket run') + " (eager: no graphs)")
    print(f"  runtime: {_plural(stats['requests'], 'request')}, {graph_runs}, "
          f"{_plural(stats['eager_runs'], 'eager-bucket run')}, "
          f"{_plural(stats['fallbacks'], 'fallback')}, padding {stats['padded_share']:.1%}")
    return 0
