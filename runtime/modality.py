"""What the lane and the runtime know of a modality: the ``Modality`` protocol and its two members.

A modality validates its requests, turns them into encoder inputs and plans, runs the encoder, and
cuts its outputs per request. Shapes are the host-side forms ``validate`` returns: a list of
``(t, h, w)`` per vision request, a list of frame counts per audio request. Input *rows* are what the
static input buffer holds per unit: patches (vision) or 100-frame chunks (audio). Nothing above this
module branches on vision or audio: a new modality is a class with these members (the runtime's
``modalities=`` argument takes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ..encoders.audio import AudioEncoder, audio_output_length
from ..encoders.vision import VisionEncoder
from .grid import AUDIO_CHUNK_FRAMES, Bucket
from .packing import Demand, audio_demand, vision_demand
from .split import Piece, PieceLimit, audio_pieces, vision_pieces
from .requests import AudioOutput, AudioRequest, VisionOutput, VisionRequest, validate_audio, validate_vision


@dataclass(frozen=True)
class EncoderFacts:
    """What the runtime needs of an encoder beyond running it: where it runs and what its
    attention takes (``encoders.attention`` chooses backends by these)."""

    device: torch.device
    dtype: torch.dtype
    head_dim: int
    num_heads: int
    attn_backend: str


class Modality(Protocol):
    """One kind of request, as the lane runs it and the runtime validates it.

    Attributes:
        name: the stats' and the grid's key (``"vision"``, ``"audio"``).
        request_type: the request class it takes (subclasses too).
        input_field: the request's input tensor, named when its values are not finite.
        eager_cudnn: whether big uncaptured calls may take cuDNN's varlen attention.
        encoder: the encoder it runs.
    """

    name: str
    request_type: type
    input_field: str
    eager_cudnn: bool
    encoder: object

    @property
    def facts(self) -> EncoderFacts: ...

    def validate(self, request, index: int, finite: bool): ...
    def demand(self, shape) -> Demand: ...
    def rows(self, shape) -> int: ...
    def bucket_rows(self, bucket: Bucket) -> int: ...
    def out_rows(self, shape) -> int: ...
    def row_bytes(self) -> tuple[int, int]: ...
    def plan(self, shapes: list, bucket: Bucket | None = None): ...
    def input_buffer(self, rows: int, device: torch.device, zero: bool = True) -> torch.Tensor: ...
    def fill(self, requests: list, shapes: list, out: torch.Tensor) -> int: ...
    def run(self, inputs: torch.Tensor, plan, backend: str | None) -> tuple[torch.Tensor, ...]: ...
    def output(self, tensors: tuple[torch.Tensor, ...]): ...
    def items(self, request, shape) -> list[tuple[object, list]]: ...
    def pieces(self, shape, limit: PieceLimit) -> list[Piece]: ...
    def piece(self, request, piece: Piece): ...
    def tensors(self, output) -> tuple[torch.Tensor, ...]: ...
    def eager_bytes(self, units: int) -> int: ...
    def typical_shapes(self, bucket: Bucket) -> list: ...
    def typical_request(self, shape): ...
    def record(self, recorder, shape) -> None: ...


def _facts(enc, num_heads: int) -> EncoderFacts:
    return EncoderFacts(enc.device, enc.dtype, enc.head_dim, num_heads, enc.attn_backend)


class VisionModality:
    """Images and videos: rows are patches; outputs are embeds plus the DeepStack tensors."""

    name = "vision"
    request_type = VisionRequest
    input_field = "pixel_values"
    eager_cudnn = True  # long many-segment calls, where cuDNN varlen beats FlashAttention

    def __init__(self, encoder: VisionEncoder):
        self.encoder = encoder

    @property
    def facts(self) -> EncoderFacts:
        return _facts(self.encoder, self.encoder.num_heads)

    def validate(self, request, index: int, finite: bool) -> list[tuple[int, int, int]]:
        """Checks a ``VisionRequest`` (``requests.validate_vision``); returns its grid triples."""
        enc = self.encoder
        return validate_vision(request, index, enc.in_features, enc.merge, finite)

    def row_bytes(self) -> tuple[int, int]:
        """(static input bytes, estimated peak activation bytes) per patch."""
        enc = self.encoder
        size, c = _itemsize(enc.dtype), enc.config
        values = 3 * c.hidden_size + 2 * c.intermediate_size + c.out_hidden_size * (len(enc.deepstack_visual_indexes) + 1)
        return enc.in_features * size, values * size + 56

    def record(self, recorder, shape) -> None:
        recorder.record_vision(shape)

    def demand(self, shape) -> Demand:
        return vision_demand(shape)

    def segments(self, bucket: Bucket) -> int:
        """Attention segments of a bucket: one per frame, then the padding's segments."""
        return bucket.batch + math.ceil(bucket.size / self.encoder.pad_segment_tokens)

    def plan(self, shapes: list, bucket: Bucket | None = None):
        """The host plan of requests with ``shapes`` (padded to ``bucket`` when given)."""
        grids = [g for s in shapes for g in s]
        if bucket is None:
            return self.encoder.plan(grids)
        plan = self.encoder.plan(grids, num_tokens=bucket.size, num_segments=self.segments(bucket))
        plan.max_seqlen = bucket.size  # a fixed bound per bucket, whatever the mix
        return plan

    def rows(self, shape) -> int:
        return sum(t * h * w for t, h, w in shape)

    def bucket_rows(self, bucket: Bucket) -> int:
        return bucket.size

    def input_buffer(self, rows: int, device: torch.device, zero: bool = True) -> torch.Tensor:
        enc = self.encoder
        return (torch.zeros if zero else torch.empty)(rows, enc.in_features, dtype=enc.dtype, device=device)

    def fill(self, requests: list, shapes: list, out: torch.Tensor) -> int:
        """Copies the requests' inputs into the first rows of ``out``; returns the rows written.
        Several requests whose inputs are on ``out``'s device: one ``cat`` into those rows (one
        launch); otherwise one copy per request (host inputs travel by their own copies)."""
        if len(requests) > 1:
            srcs = [r.pixel_values for r in requests]
            device = out.device
            if all(x.device == device for x in srcs):
                rows = sum(x.shape[0] for x in srcs)
                torch.cat(srcs, out=out[:rows])
                return rows
        row = 0
        for r in requests:
            n = r.pixel_values.shape[0]
            out[row : row + n].copy_(r.pixel_values, non_blocking=True)
            row += n
        return row

    def run(self, inputs: torch.Tensor, plan, backend: str | None) -> tuple[torch.Tensor, ...]:
        embeds, deepstack = self.encoder.run(inputs, plan, backend)
        return (embeds, *deepstack)

    def out_rows(self, shape) -> int:
        return self.rows(shape) // 4

    def output(self, tensors: tuple[torch.Tensor, ...]) -> VisionOutput:
        return VisionOutput(tensors[0], list(tensors[1:]))

    def items(self, request: VisionRequest, shape) -> list[tuple[VisionRequest, list]]:
        """The request cut into one request per image/video (what an out-of-memory retry runs)."""
        out, start = [], 0
        for j, (t, h, w) in enumerate(shape):
            n = t * h * w
            out.append((VisionRequest(request.pixel_values[start : start + n], request.grid_thw[j : j + 1]),
                        [shape[j]]))
            start += n
        return out

    def pieces(self, shape, limit: PieceLimit) -> list[Piece]:
        """The request cut into pieces of whole frames within ``limit`` (``split.vision_pieces``)."""
        return vision_pieces(shape, limit.size, limit.batch, limit.even)

    def piece(self, request: VisionRequest, piece: Piece) -> VisionRequest:
        """One piece of ``request`` as a request: a view of its patches."""
        return VisionRequest(request.pixel_values[piece.start : piece.stop], torch.tensor(piece.shape))

    def tensors(self, output: VisionOutput) -> tuple[torch.Tensor, ...]:
        return (output.embeds, *output.deepstack)

    def eager_bytes(self, units: int) -> int:
        """Estimated device memory of one eager call over ``units`` patches: its input rows and the
        encoder's activations (``VisionEncoder.activation_bytes``)."""
        enc = self.encoder
        return units * enc.in_features * _itemsize(enc.dtype) + enc.activation_bytes(units)

    def typical_shapes(self, bucket: Bucket) -> list:
        """A typical full pack of ``bucket`` (for timing): ``batch`` equal frames filling it."""
        n = min(bucket.batch, bucket.size // 4)
        per = bucket.size // n // 4 * 4
        return [[(1, 2, per // 2)]] * n

    def typical_request(self, shape) -> VisionRequest:
        enc = self.encoder
        return VisionRequest(torch.randn(self.rows(shape), enc.in_features, device=enc.device, dtype=enc.dtype),
                             torch.tensor(shape))


class AudioModality:
    """Audio clips: rows are 100-frame chunks; the output is one embeds tensor."""

    name = "audio"
    request_type = AudioRequest
    input_field = "input_features"
    eager_cudnn = False  # audio windows are short (~104 tokens), where cuDNN loses to FlashAttention

    def __init__(self, encoder: AudioEncoder):
        if encoder.chunk_frames != AUDIO_CHUNK_FRAMES:
            raise ValueError(f"the bucket grid assumes {AUDIO_CHUNK_FRAMES}-frame chunks; "
                             f"this encoder uses {encoder.chunk_frames}")
        self.encoder = encoder
        enc = encoder
        self.window = enc.tokens_per_chunk * max(enc.n_window_infer // enc.chunk_frames, 1)  # tokens
        self.window_frames = enc.chunk_frames * max(enc.n_window_infer // enc.chunk_frames, 1)

    @property
    def facts(self) -> EncoderFacts:
        return _facts(self.encoder, self.encoder.config.encoder_attention_heads)

    def validate(self, request, index: int, finite: bool) -> list[int]:
        """Checks an ``AudioRequest`` (``requests.validate_audio``); returns its lengths."""
        return validate_audio(request, index, self.encoder.config.num_mel_bins, finite)

    def row_bytes(self) -> tuple[int, int]:
        """(static input bytes, estimated peak activation bytes) per 100-frame chunk."""
        enc = self.encoder
        size, c = _itemsize(enc.dtype), enc.config
        tokens = enc.tokens_per_chunk
        conv = 2 * c.downsample_hidden_size * (c.num_mel_bins // 2) * (enc.chunk_frames // 2)
        values = conv + tokens * (3 * c.d_model + 2 * c.encoder_ffn_dim + c.output_dim)
        return c.num_mel_bins * enc.chunk_frames * size, values * size + 24 * tokens

    def record(self, recorder, shape) -> None:
        recorder.record_audio(shape)

    def demand(self, shape) -> Demand:
        return audio_demand(shape)

    def segments(self, bucket: Bucket) -> int:
        """Attention windows of a bucket: the real audios' and the padding's, bounded."""
        tokens = bucket.size // AUDIO_CHUNK_FRAMES * self.encoder.tokens_per_chunk
        return bucket.batch + 2 * math.ceil(tokens / self.window) + 1

    def plan(self, shapes: list, bucket: Bucket | None = None):
        lens = [T for s in shapes for T in s]
        if bucket is None:
            return self.encoder.plan(lens)
        plan = self.encoder.plan(lens, num_chunks=self.bucket_rows(bucket), num_segments=self.segments(bucket))
        plan.max_seqlen = self.window  # a fixed bound per bucket, whatever the mix
        return plan

    def rows(self, shape) -> int:
        return sum(math.ceil(T / AUDIO_CHUNK_FRAMES) for T in shape)

    def bucket_rows(self, bucket: Bucket) -> int:
        return bucket.size // AUDIO_CHUNK_FRAMES

    def input_buffer(self, rows: int, device: torch.device, zero: bool = True) -> torch.Tensor:
        enc = self.encoder
        shape = (rows, enc.config.num_mel_bins, enc.chunk_frames)
        return (torch.zeros if zero else torch.empty)(shape, dtype=enc.dtype, device=device)

    def fill(self, requests: list, shapes: list, out: torch.Tensor) -> int:
        """Every audio's chunks into ``out [rows, mel, F]`` by one ``cat`` of views: an audio's whole
        chunks are one strided view of its features, a tail chunk is its frames zero-padded to ``F``
        (``chunk_features``' layout, without its own pad and cat). Features on the host are copied to
        the device first."""
        device, (mel, frames) = out.device, out.shape[1:]
        pieces, row = [], 0
        for r, shape in zip(requests, shapes):
            feats = r.input_features
            if feats.device != device:
                feats = feats.to(device, non_blocking=True)  # [mel, sum T]
            s_mel, s_t = feats.stride()
            offset = feats.storage_offset()
            start = 0
            for T in shape:
                whole, tail = divmod(T, frames)
                if whole:
                    # feats[:, start : start + whole * frames].unflatten(1, (whole, frames)).transpose(0, 1)
                    # as one view: [whole, mel, frames]
                    pieces.append(feats.as_strided((whole, mel, frames), (frames * s_t, s_mel, s_t), offset + start * s_t))
                    row += whole
                if tail:
                    part = feats[:, start + whole * frames : start + T]
                    pieces.append(torch.nn.functional.pad(part, (0, frames - tail)).unsqueeze(0))
                    row += 1
                start += T
        if len(pieces) == 1:
            out[:row].copy_(pieces[0], non_blocking=True)
        elif pieces:
            torch.cat(pieces, out=out[:row])
        return row

    def run(self, inputs: torch.Tensor, plan, backend: str | None) -> tuple[torch.Tensor, ...]:
        return (self.encoder.run(inputs, plan, backend),)

    def out_rows(self, shape) -> int:
        return sum(audio_output_length(T, self.encoder.n_window) for T in shape)

    def output(self, tensors: tuple[torch.Tensor, ...]) -> AudioOutput:
        return AudioOutput(tensors[0])

    def items(self, request: AudioRequest, shape) -> list[tuple[AudioRequest, list]]:
        out, start = [], 0
        for j, T in enumerate(shape):
            out.append((AudioRequest(request.input_features[:, start : start + T], request.feature_lens[j : j + 1]),
                        [T]))
            start += T
        return out

    def pieces(self, shape, limit: PieceLimit) -> list[Piece]:
        """The request cut into pieces of whole attention windows within ``limit``
        (``split.audio_pieces``)."""
        enc = self.encoder
        return audio_pieces(shape, limit.size, limit.batch, self.window_frames, enc.chunk_frames, limit.even)

    def piece(self, request: AudioRequest, piece: Piece) -> AudioRequest:
        """One piece of ``request`` as a request: a view of its frames."""
        return AudioRequest(request.input_features[:, piece.start : piece.stop], torch.tensor(piece.shape))

    def tensors(self, output: AudioOutput) -> tuple[torch.Tensor, ...]:
        return (output.embeds,)

    def eager_bytes(self, units: int) -> int:
        """Estimated device memory of one eager call over ``units`` chunk-padded frames: its chunk
        rows and the encoder's activations (``AudioEncoder.activation_bytes``)."""
        enc = self.encoder
        chunks = math.ceil(units / AUDIO_CHUNK_FRAMES)
        return chunks * enc.config.num_mel_bins * enc.chunk_frames * _itemsize(enc.dtype) + enc.activation_bytes(chunks)

    def typical_shapes(self, bucket: Bucket) -> list:
        """A typical full pack of ``bucket`` (for timing): ``batch`` equal clips filling it."""
        n = min(bucket.batch, bucket.size // AUDIO_CHUNK_FRAMES)
        return [[bucket.size // n // AUDIO_CHUNK_FRAMES * AUDIO_CHUNK_FRAMES]] * n

    def typical_request(self, shape) -> AudioRequest:
        enc = self.encoder
        return AudioRequest(torch.randn(enc.config.num_mel_bins, sum(shape), device=enc.device, dtype=enc.dtype),
                            torch.tensor(shape))


BUILT_IN = (VisionModality, AudioModality)  # the modalities ``EncoderRuntime(vision=, audio=)`` builds


def _itemsize(dtype) -> int:
    return dtype.itemsize if hasattr(dtype, "itemsize") else 2


__all__ = ["BUILT_IN", "AudioModality", "EncoderFacts", "Modality", "VisionModality"]
