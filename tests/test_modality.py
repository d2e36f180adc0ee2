"""A third modality through the runtime and the service: nothing above ``runtime.modality`` knows
vision or audio. The fake modality's encoder mixes each row with the sum of its segment, so a row
packed into the wrong segment, a padding row read, or a request's rows cut wrong changes its output."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from omnienc.runtime import (
    Bucket, BucketGrid, EncoderRuntime, EncoderService, ModalityGrid, RuntimeConfig, VisionRequest,
)
from omnienc.runtime.modality import EncoderFacts
from omnienc.runtime.packing import Demand
from omnienc.runtime.split import Piece, Unsplittable
from omnienc.runtime.service import default_cost
from test_runtime import GRID, check_against_direct, encoders, vision_request  # noqa: F401 (encoders: the fixture)

WIDTH = 8


@dataclasses.dataclass
class TokenRequest:
    values: torch.Tensor  # [sum(lengths), WIDTH]
    lengths: list[int]


@dataclasses.dataclass
class TokenOutput:
    embeds: torch.Tensor


@dataclasses.dataclass
class TokenPlan:
    """Which segment each row is in; padding rows form their own segment."""

    TENSORS = ("segment",)
    segment: torch.Tensor  # int64 [rows]
    segments: int
    seqlens: tuple[int, ...]

    def to(self, device) -> TokenPlan:
        return dataclasses.replace(self, segment=self.segment.to(device))


class TokenEncoder:
    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(WIDTH, WIDTH, generator=g)

    def run(self, x: torch.Tensor, plan: TokenPlan) -> torch.Tensor:
        sums = torch.zeros(plan.segments, WIDTH, dtype=x.dtype).index_add_(0, plan.segment, x)
        return x @ self.weight + sums[plan.segment]


class TokenModality:
    """The ``Modality`` protocol for ``TokenRequest``: rows are tokens, one segment per item."""

    name = "tokens"
    request_type = TokenRequest
    input_field = "values"
    eager_cudnn = False

    def __init__(self, encoder: TokenEncoder):
        self.encoder = encoder

    @property
    def facts(self) -> EncoderFacts:
        return EncoderFacts(torch.device("cpu"), torch.float32, WIDTH, 1, "sdpa")

    def validate(self, request, index: int, finite: bool) -> list[int]:
        kind = type(request).__name__
        if request.values.shape != (sum(request.lengths), WIDTH) or min(request.lengths) < 1:
            raise ValueError(f"request {index} ({kind}): field 'values' must be [sum(lengths), {WIDTH}]")
        if finite and not bool(torch.isfinite(request.values).all()):
            raise ValueError(f"request {index} ({kind}): field 'values' holds NaN or infinite values")
        return list(request.lengths)

    def demand(self, shape) -> Demand:
        return Demand(sum(shape), len(shape))

    def rows(self, shape) -> int:
        return sum(shape)

    def bucket_rows(self, bucket: Bucket) -> int:
        return bucket.size

    def out_rows(self, shape) -> int:
        return sum(shape)

    def row_bytes(self) -> tuple[int, int]:
        return 4 * WIDTH, 8 * WIDTH

    def plan(self, shapes: list, bucket: Bucket | None = None) -> TokenPlan:
        lengths = [n for s in shapes for n in s]
        rows = sum(lengths) if bucket is None else bucket.size
        segment = torch.full((rows,), len(lengths), dtype=torch.int64)  # padding: a segment of its own
        segment[: sum(lengths)] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.int64))
        segments = len(lengths) + 1 if bucket is None else bucket.batch + 1
        return TokenPlan(segment, segments, tuple(lengths))

    def input_buffer(self, rows: int, device, zero: bool = True) -> torch.Tensor:
        return (torch.zeros if zero else torch.empty)(rows, WIDTH, device=device)

    def fill(self, requests: list, shapes: list, out: torch.Tensor) -> int:
        row = 0
        for r in requests:
            out[row : row + r.values.shape[0]].copy_(r.values)
            row += r.values.shape[0]
        return row

    def run(self, inputs: torch.Tensor, plan: TokenPlan, backend) -> tuple[torch.Tensor, ...]:
        return (self.encoder.run(inputs, plan),)

    def output(self, tensors) -> TokenOutput:
        return TokenOutput(tensors[0])

    def items(self, request, shape) -> list:
        out, start = [], 0
        for n in shape:
            out.append((TokenRequest(request.values[start : start + n], [n]), [n]))
            start += n
        return out

    def pieces(self, shape, bucket: Bucket) -> list[Piece]:
        """Whole items (segments), in order, at most a bucket's worth a piece."""
        pieces, items, start = [], [], 0
        for n in shape:
            if n > bucket.size:
                raise Unsplittable(f"an item of {n} tokens is larger than every bucket")
            if items and (sum(items) + n > bucket.size or len(items) == bucket.batch):
                pieces.append(Piece(start, start + sum(items), tuple(items)))
                start, items = start + sum(items), []
            items.append(n)
        pieces.append(Piece(start, start + sum(items), tuple(items)))
        return pieces

    def piece(self, request, piece: Piece) -> TokenRequest:
        return TokenRequest(request.values[piece.start : piece.stop], list(piece.shape))

    def tensors(self, output: TokenOutput) -> tuple[torch.Tensor, ...]:
        return (output.embeds,)

    def eager_bytes(self, units: int) -> int:
        return units * 12 * WIDTH

    def typical_shapes(self, bucket: Bucket) -> list:
        return [[bucket.size // bucket.batch]] * bucket.batch

    def typical_request(self, shape) -> TokenRequest:
        return TokenRequest(torch.randn(sum(shape), WIDTH), list(shape))

    def record(self, recorder, shape) -> None:
        pass


# Rows must be multiples of 4 for a vision grid; the lane reads only the buckets.
TOKEN_GRID = ModalityGrid("vision", (Bucket(16, 2), Bucket(64, 4)))


def token_request(lengths: list[int]) -> TokenRequest:
    return TokenRequest(torch.randn(sum(lengths), WIDTH), lengths)


def check_tokens(enc: TokenEncoder, reqs: list, outs: list) -> None:
    for r, o in zip(reqs, outs):
        alone = TokenModality(enc).plan([r.lengths])
        torch.testing.assert_close(o.embeds, enc.run(r.values, alone), rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_a_third_modality_runs_beside_vision_through_the_runtime_and_the_service(encoders):
    vis, _ = encoders
    enc = TokenEncoder(seed=random.randrange(1 << 30))
    grid = BucketGrid("float32", GRID.vision, None)
    rt = EncoderRuntime(vision=vis, grid=grid, modalities=[(TokenModality(enc), TOKEN_GRID)],
                        config=RuntimeConfig(max_transient_bytes=2**30))  # room for the uncut item
    rt.capture(progress=False)
    assert [lane.modality for lane in rt.lanes()] == ["vision", "tokens"]
    rng = random.Random()
    tokens = [token_request([rng.randint(1, 12) for _ in range(rng.randint(1, 2))]) for _ in range(6)]
    tokens += [token_request([40, 30])]  # 70 rows: fits no bucket, cut into its two items
    tokens += [token_request([70])]  # one item of 70 rows: cannot be cut, a fallback
    images = [vision_request([[1, 4, 6]], vis.config), vision_request([[1, 2, 8]], vis.config)]
    reqs = [tokens[0], images[0], *tokens[1:4], images[1], *tokens[4:]]
    outs = rt.encode(reqs)
    check_tokens(enc, [r for r in reqs if isinstance(r, TokenRequest)], [o for o in outs if isinstance(o, TokenOutput)])
    check_against_direct(encoders, images, [o for o, r in zip(outs, reqs) if isinstance(r, VisionRequest)])
    s = rt.stats()
    # the cut request's two pieces (40 and 30 rows) need two 64-row packs; the small ones may join them
    assert s["tokens"]["requests"] == 8 and s["tokens"]["fallbacks"] == 1 and s["tokens"]["replays"] >= 2
    assert s["requests"] == 10 and s["fallbacks"] == 1

    bad = token_request([3])
    bad.values = bad.values[:, :5]
    with pytest.raises(ValueError, match="request 1 \\(TokenRequest\\): field 'values'"):
        rt.encode([images[0], bad])
    with pytest.raises(ValueError, match="request 0: expected VisionRequest or AudioRequest or TokenRequest"):
        rt.encode([{"values": 1}])

    with EncoderService(rt, max_wait_ms=2, cost=default_cost) as svc:  # no measured costs of tokens
        futures = [svc.submit(r) for r in reqs]
        served = [f.result(timeout=60) for f in futures]
    check_tokens(enc, [r for r in reqs if isinstance(r, TokenRequest)],
                 [o for o in served if isinstance(o, TokenOutput)])
