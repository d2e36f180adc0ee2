"""Cutting oversized requests into pieces (pure: tables and properties, no torch)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnienc.runtime.split import Piece, PieceLimit, Unsplittable, audio_parts, audio_pieces, piece_limit, vision_pieces
from omnienc.runtime.grid import Bucket


def test_vision_video_cut_into_whole_frames():
    # a 720p video of 10 frame pairs (3680 patches each) into pieces of at most 4 pairs
    assert vision_pieces([(10, 46, 80)], 16384, 16) == [
        Piece(0, 4 * 3680, ((4, 46, 80),)), Piece(4 * 3680, 8 * 3680, ((4, 46, 80),)),
        Piece(8 * 3680, 10 * 3680, ((2, 46, 80),))]


def test_vision_items_share_pieces_and_batch_bounds_them():
    # two images then a video; at most 3 frames a piece
    assert vision_pieces([(1, 2, 2), (1, 4, 4), (5, 2, 2)], 1000, 3) == [
        Piece(0, 24, ((1, 2, 2), (1, 4, 4), (1, 2, 2))), Piece(24, 36, ((3, 2, 2),)), Piece(36, 40, ((1, 2, 2),))]


def test_vision_frame_larger_than_the_largest_bucket_cannot_be_cut():
    with pytest.raises(Unsplittable, match=r"100x100 = 10000 patches .* \(4096 patches\)"):
        vision_pieces([(3, 2, 2), (1, 100, 100)], 4096, 16)


def video_grids(max_t: int, max_items: int):
    """Requests of up to ``max_items`` items of up to ``max_t`` frames of even sizes."""
    side = st.integers(1, 12).map(lambda x: 2 * x)
    return st.lists(st.tuples(st.integers(1, max_t), side, side), min_size=1, max_size=max_items)


def assert_cover_in_order_and_fit(pieces, grid, max_size, max_batch):
    row = 0
    frames = []  # (h, w) of every frame, in order
    for p in pieces:
        assert p.start == row and p.stop > p.start
        assert p.stop - p.start == sum(t * h * w for t, h, w in p.shape) <= max_size
        assert sum(t for t, _, _ in p.shape) <= max_batch
        frames += [(h, w) for t, h, w in p.shape for _ in range(t)]
        row = p.stop
    assert row == sum(t * h * w for t, h, w in grid)
    assert frames == [(h, w) for t, h, w in grid for _ in range(t)]


@settings(max_examples=200, deadline=None)
@given(video_grids(9, 6), st.integers(600, 3000), st.integers(1, 8))
def test_vision_pieces_cover_the_request_in_order_and_fit(grid, max_size, max_batch):
    assert_cover_in_order_and_fit(vision_pieces(grid, max_size, max_batch), grid, max_size, max_batch)


def test_even_pieces_are_as_many_as_filled_ones_and_as_equal_as_whole_frames_allow():
    # a minute of 720p video, 60 frame pairs, in pieces of at most 17: filled 17+17+17+9, even 15 x 4
    filled = vision_pieces([(60, 46, 80)], 17 * 3680, 64)
    even = vision_pieces([(60, 46, 80)], 17 * 3680, 64, even=True)
    assert [p.shape for p in filled] == [((17, 46, 80),)] * 3 + [((9, 46, 80),)]
    assert [p.shape for p in even] == [((15, 46, 80),)] * 4
    # a clip of 7200 mel frames in windows of 800, at most 3500 a piece: filled 3200+3200+800, even 2400 x 3
    frames = [7200]
    assert [sum(p.shape) for p in audio_pieces(frames, 3500, 8, 800, 100)] == [3200, 3200, 800]
    assert [sum(p.shape) for p in audio_pieces(frames, 3500, 8, 800, 100, even=True)] == [2400] * 3


def test_pieces_are_even_only_where_they_run_uncaptured():
    top = Bucket(4096, 8)
    assert piece_limit(top, graph=True, merge_units=4 * 4096, within=None) == PieceLimit(4096, 8, even=False)
    assert piece_limit(top, graph=False, merge_units=4 * 4096, within=None) == PieceLimit(4 * 4096, 32, even=True)
    assert piece_limit(top, graph=False, merge_units=4 * 4096, within=10000) == PieceLimit(10000, 24, even=True)


@settings(max_examples=100, deadline=None)
@given(video_grids(30, 4), st.integers(600, 3000), st.integers(2, 16))
def test_even_vision_pieces_cover_the_request_fit_and_are_no_larger(grid, max_size, max_batch):
    filled = vision_pieces(grid, max_size, max_batch)
    even = vision_pieces(grid, max_size, max_batch, even=True)
    assert len(even) == len(filled)
    assert max(p.stop - p.start for p in even) <= max(p.stop - p.start for p in filled)
    assert_cover_in_order_and_fit(even, grid, max_size, max_batch)


@pytest.mark.parametrize("frames,max_part,parts", [
    (12800, 12800, [12800]),  # fits: never cut
    (30000, 12800, [12800, 12800, 4400]),
    (25650, 12800, [12800, 12000, 850]),  # a rest of 50 frames, under a chunk, takes a window
    (1650, 1600, [800, 850]),
    (2400, 1000, [800, 800, 800]),  # parts are whole windows: 1000 -> 800
])
def test_audio_parts(frames, max_part, parts):
    assert audio_parts(frames, max_part, 800, 100) == parts
    assert sum(parts) == frames


def test_audio_parts_that_cannot_be_cut():
    with pytest.raises(Unsplittable, match="windows of 800 frames"):
        audio_parts(2000, 700, 800, 100)
    with pytest.raises(Unsplittable, match="last 850 frames"):
        audio_parts(1650, 800, 800, 100)  # the rest needs a window more than a part holds


def test_audio_pieces_group_parts_and_clips_in_order():
    assert audio_pieces([300, 3000, 250], 1600, 3, 800, 100) == [
        Piece(0, 300, (300,)), Piece(300, 1900, (1600,)), Piece(1900, 3300, (1400,)), Piece(3300, 3550, (250,))]
    assert audio_pieces([300, 500, 250, 900], 1600, 3, 800, 100) == [
        Piece(0, 1050, (300, 500, 250)), Piece(1050, 1950, (900,))]  # three clips a piece at most


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40000), min_size=1, max_size=5), st.integers(2, 40).map(lambda x: 800 * x),
       st.integers(1, 8))
def test_audio_pieces_cover_the_request_in_order_and_fit(frames, max_size, max_batch):
    pieces = audio_pieces(frames, max_size, max_batch, 800, 100)
    row = 0
    for p in pieces:
        assert p.start == row and p.stop - p.start == sum(p.shape)
        assert sum(math.ceil(n / 100) * 100 for n in p.shape) <= max_size and len(p.shape) <= max_batch
        row = p.stop
    assert row == sum(frames)
    # each clip's parts, in order, sum to the clip; every cut lies on a window boundary; no part
    # of a clip of at least a chunk is shorter than a chunk
    parts = [n for p in pieces for n in p.shape]
    for n in frames:
        got, total = [], 0
        while total < n:
            got.append(parts.pop(0))
            total += got[-1]
        assert total == n
        assert all(x % 800 == 0 for x in got[:-1])
        assert n < 100 or got[-1] >= 100
