"""The bucket tuner: the grid that minimises the predicted GPU time of a trace.

**Objective.** The predicted GPU ms of the whole trace under a grid, as ``simulate`` computes it:
requests batched by the service's rule (or fixed windows), each batch run as the runtime's lane
runs it (``simulate.SimLane``: packing, merged eager calls, exact-layout graphs), every run priced by
the ``CostModel`` rule of its kind. **Constraints:** at most ``max_graphs`` graph buckets over both modalities (eager
buckets capture nothing and are free), and no graph bucket above ``max_graph_bytes`` of estimated
activations (``estimate_activation_bytes``). ``graphs_up_to`` is part of the search: a modality's
grid is a set of graph buckets plus, optionally, one eager bucket above them.

**Search**, per modality (given the batches, the modalities' costs add up):

1. Graph buckets for requests that run alone, optimal for every bucket count ``k``: the classic
   optimal-breakpoints dynamic program over the sorted distinct demand sizes (a bucket per chosen
   size covers the sizes down to the previous chosen one, its batch the largest among them; larger
   demands run eagerly), with each demand's cost read from the model (its replay in the bucket, or
   its eager run). Exact for requests alone and a model whose replay cost does not fall with size
   (up to ``MAX_CANDIDATES`` distinct sizes; beyond, sizes are drawn from count quantiles).
2. Batching packs requests together, so the program is also run on whole batches and then,
   repeatedly, on the packs of the best grid so far.
3. Each set of graph buckets is tried without an eager bucket and with one above it that holds the
   largest request, or the largest batch (fewer fallbacks, fewer launches).
4. The base grid's own buckets are candidates too: as they are, and with ``graphs_up_to`` at each of
   its sizes.

Every candidate is scored by the simulator; per graph count the best is kept (a tie keeps the
earlier candidate: the base's, then fewer graphs, then no eager bucket). The graph budget is split between the modalities by trying every
split. Finally the base grid is scored the same way and returned instead when the search did not
beat it within the constraints: the result is never worse than an admissible base.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from omnienc.runtime.batching import BatchPolicy
from omnienc.runtime.config import RuntimeConfig
from omnienc.runtime.costs import CostModel, estimate_activation_bytes
from omnienc.runtime.grid import AUDIO_CHUNK_FRAMES, AUDIO_WINDOW_FRAMES, Bucket, BucketGrid, GridError, ModalityGrid
from omnienc.runtime.packing import Demand, Pack
from omnienc.runtime.simulator import Batching, batches, resolve_batching, simulate, simulate_modality
from omnienc.runtime.trace import MODALITIES, TraceRecord

_BLOCK = 512  # DP rows per numpy block: memory O(_BLOCK * candidate sizes)
MAX_CANDIDATES = 1024  # most distinct bucket sizes the program considers (quantiles beyond)


@dataclass(frozen=True)
class Choice:
    """One modality's grid and its predicted GPU time on the trace.

    Attributes:
        ms: Predicted GPU ms of the modality's requests.
        graphs: Graph buckets (captured), ascending.
        eager: Eager buckets (above every graph bucket; nothing captured), ascending.
    """

    ms: float
    graphs: tuple[Bucket, ...] = ()
    eager: tuple[Bucket, ...] = ()

    def grid(self, modality: str) -> ModalityGrid | None:
        """The ``ModalityGrid`` (``graphs_up_to`` = the largest graph size when there are eager
        buckets; 1 when every bucket is eager); None without buckets."""
        if not self.graphs and not self.eager:
            return None
        up_to = None if not self.eager else max(b.size for b in self.graphs) if self.graphs else 1
        return ModalityGrid(modality, self.graphs + self.eager, up_to)


def _split(g: ModalityGrid | None) -> tuple[tuple[Bucket, ...], tuple[Bucket, ...]]:
    if g is None:
        return (), ()
    return g.graph_buckets, tuple(b for b in g.buckets if not g.is_graph(b))


def optimal_buckets(
    items: Sequence[Demand], max_buckets: int, replay: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    eager: Callable[[np.ndarray, np.ndarray], np.ndarray], max_size: int | None = None,
    segments: Sequence[int | None] | None = None,
) -> list[tuple[Bucket, ...]]:
    """Best graph buckets for demands that each run alone, for every bucket count.

    Minimises ``sum(replay(bucket(x).size, x.size, x.batch)) + sum(tail(x) for x fitting none)``,
    where ``bucket(x)`` is the smallest bucket holding x and ``tail(x)`` its eager run, or, where
    ``segments`` gives the smallest unit it can be cut by (a frame, an audio window; None: it cannot
    be) and that fits the largest bucket T, its pieces (``split``) priced as replays of T, each
    holding as many whole segments as T does: the runtime cuts such a request so. Bucket sizes are drawn from the distinct
    demand sizes (all of them up to ``MAX_CANDIDATES``, else count quantiles and the largest), at
    most ``max_size``; each bucket's batch is the largest batch among the demands it covers.
    O(max_buckets * n^2) for n candidate sizes, vectorised.

    Args:
        items: The demands.
        max_buckets: Largest bucket count to solve for.
        replay: ``replay(bucket_sizes, sizes, batches) -> ms`` of one replay of a bucket carrying one
            demand, vectorised (broadcast).
        eager: ``eager(units, items) -> ms`` of one eager run, vectorised.
        max_size: Largest allowed bucket size; None for no limit.

    Returns:
        ``result[k]``: the best buckets with at most k buckets, ascending, for k = 0..max_buckets.
    """
    if not items:
        return [()] * (max_buckets + 1)
    size = np.array([d.size for d in items], dtype=np.int64)
    batch = np.array([d.batch for d in items], dtype=np.int64)
    seg = np.array([0 if segments is None or segments[i] is None else segments[i] for i in range(len(items))],
                   dtype=np.int64)  # 0: cannot be cut
    cand = np.unique(size)
    if len(cand) > MAX_CANDIDATES:
        q = np.quantile(np.sort(size), np.linspace(0, 1, MAX_CANDIDATES), method="higher")
        cand = np.unique(np.concatenate([q.astype(np.int64), cand[-1:]]))
    n = len(cand)
    # Distinct (candidate index, size, batch) with counts, ordered by candidate index.
    idx = np.searchsorted(cand, size, side="left")
    keys, count = np.unique(np.stack([idx, size, batch, seg], axis=1), axis=0, return_counts=True)
    uidx, usize, ubatch, useg = keys[:, 0], keys[:, 1], keys[:, 2], keys[:, 3]
    upto = np.searchsorted(uidx, np.arange(n), side="right")  # units with candidate index <= k
    R = replay(cand[:, None].astype(np.float64), usize[None, :].astype(np.float64),
               ubatch[None, :].astype(np.float64)) * count[None, :]
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(R, axis=1)], axis=1)
    Q = cum[:, upto]  # Q[j, k]: replay cost in a bucket of cand[j] of the units up to candidate k
    E = eager(usize.astype(np.float64), ubatch.astype(np.float64)) * count
    cumE = np.concatenate([[0.0], np.cumsum(E)])
    tail = cumE[-1] - cumE[upto]  # eager cost of the units above candidate k
    if useg.any():  # those that can be cut: their pieces in the largest bucket, candidate k
        top = cand[:, None].astype(np.float64)
        per = np.floor(top / np.maximum(useg, 1)[None, :]) * useg[None, :]  # units of whole segments a piece holds
        cut = (useg[None, :] > 0) & (per > 0)
        pieces = np.ceil(usize[None, :] / np.maximum(per, 1))
        piece_batch = np.maximum(1.0, np.ceil(ubatch[None, :] / pieces))
        P = np.where(cut, pieces * replay(top, np.clip(per, 1, usize[None, :]).astype(np.float64), piece_batch),
                     E[None, :] / count[None, :]) * count[None, :]
        above = uidx[None, :] > np.arange(n)[:, None]
        tail = np.where(above, P, 0.0).sum(axis=1)
    maxb = np.zeros(n, dtype=np.int64)
    np.maximum.at(maxb, uidx, ubatch)
    allowed = np.ones(n, dtype=bool) if max_size is None else cand <= max_size
    diag = Q[np.arange(n), np.arange(n)]
    f = np.where(allowed, diag, np.inf)  # f[j]: least cost up to candidate j, k buckets, the largest at j
    layers, args = [f], [np.full(n, -1)]
    for _ in range(1, min(max_buckets, int(allowed.sum()))):
        nf, arg = np.full(n, np.inf), np.full(n, -1)
        for j0 in range(1, n, _BLOCK):
            j = np.arange(j0, min(n, j0 + _BLOCK))
            m = f[None, : j[-1]] - Q[j, : j[-1]]  # f_k[j] = Q[j, j] + min_{i<j} (f_{k-1}[i] - Q[j, i])
            m[np.arange(j[-1])[None, :] >= j[:, None]] = np.inf
            arg[j] = np.argmin(m, axis=1)
            nf[j] = m[np.arange(len(j)), arg[j]] + diag[j]
        f = np.where(allowed, nf, np.inf)
        layers.append(f)
        args.append(arg)

    result: list[tuple[Bucket, ...]] = [()]
    best = cumE[-1]  # no bucket: everything eager
    for k in range(1, max_buckets + 1):
        if k <= len(layers):
            total = layers[k - 1] + tail
            j = int(np.argmin(total))
            if total[j] < best - 1e-12 * abs(best):
                best, ends = total[j], [j]
                for layer in range(k - 1, 0, -1):
                    ends.append(int(args[layer][ends[-1]]))
                ends.reverse()
                lows = [0] + [e + 1 for e in ends[:-1]]
                result.append(tuple(Bucket(int(cand[e]), int(maxb[lo : e + 1].max())) for lo, e in zip(lows, ends)))
                continue
        result.append(result[-1])
    return result


def _segment(modality: str, d: Demand) -> int | None:
    """The smallest unit ``d``'s request can be cut by (``split``): its largest frame (vision), or
    an audio window (a clip shorter than one cannot be cut); None where its shape is unknown."""
    if d.shape is None:
        return None
    if modality == "vision":
        return max(h * w for _, h, w in d.shape)
    return min(max(math.ceil(n / AUDIO_CHUNK_FRAMES) * AUDIO_CHUNK_FRAMES for n in d.shape), AUDIO_WINDOW_FRAMES)


def _largest_size(modality: str, limit: float, batch: int, dtype: str, hi: int) -> int:
    """Largest size whose estimated activations fit ``limit`` (the estimate grows with size)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_activation_bytes(modality, Bucket(mid, batch), dtype) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def tune_modality(
    records: Sequence[TraceRecord],
    modality: str,
    max_graphs: int,
    batching: Batching = BatchPolicy(),
    costs: CostModel | None = None,
    max_graph_bytes: float | None = None,
    dtype: str = "bfloat16",
    iterations: int = 4,
    base: ModalityGrid | None = None,
    eager_buckets: bool = True,
    config: RuntimeConfig | None = None,
) -> list[Choice]:
    """Best grids of one modality for each graph count, scored by the simulator.

    Args:
        records: The trace (records of other modalities are ignored).
        modality: ``"vision"`` or ``"audio"``.
        max_graphs: Largest graph count to solve for.
        batching: A ``BatchPolicy``, or fixed windows in ms (0: each request alone).
        costs: The cost model; None is the packaged default.
        max_graph_bytes: Largest estimated activation memory of a graph bucket; None for no limit.
        dtype: Activation dtype for the memory estimate.
        iterations: Most re-packing rounds.
        base: The base grid of this modality; its buckets are candidates (when within the limits).
        eager_buckets: Whether to try an eager bucket above the graph buckets.
        config: The runtime's configuration the simulator follows (default ``RuntimeConfig()``).

    Returns:
        ``result[k]``: the best ``Choice`` with at most k graph buckets, for k = 0..max_graphs;
        ``ms`` is non-increasing in k.
    """
    costs = costs or CostModel.load()
    split = (config or RuntimeConfig()).split_requests  # requests larger than every bucket are cut
    groups = batches(records, modality, batching)
    items = [d for g in groups for d in g]
    totals = [Demand(sum(d.size for d in g), sum(d.batch for d in g)) for g in groups]
    max_size = None
    if max_graph_bytes is not None and items:
        max_size = _largest_size(modality, max_graph_bytes, max(d.batch for d in totals), dtype,
                                 max(d.size for d in totals))
    replay_surface = costs.surfaces[modality, "replay"].many

    def eager_many(units: np.ndarray, items: np.ndarray) -> np.ndarray:
        return costs.eager_many(modality, units, items)

    def replay_many(bucket_sizes: np.ndarray, sizes: np.ndarray, batches: np.ndarray) -> np.ndarray:
        # one demand alone in a bucket: its attention as equal segments (costs.attention_segments)
        segs = bucket_sizes**2 * batches / sizes**2 if modality == "vision" else batches
        return replay_surface(bucket_sizes, segs)
    eager_options: list[tuple[Bucket, ...]] = [()]
    if eager_buckets and items:
        for pool in (items, totals):
            b = Bucket(max(d.size for d in pool), max(d.batch for d in pool))
            if (b,) not in eager_options:
                eager_options.append((b,))

    scored: dict[tuple, tuple[float, list[Pack]]] = {}

    def score(graphs: tuple[Bucket, ...], eager: tuple[Bucket, ...]) -> tuple[float, list[Pack]]:
        key = (graphs, eager)
        if key not in scored:
            gs = set(graphs)
            stats, packs = simulate_modality(groups, modality, graphs + eager, gs.__contains__, costs, config)
            scored[key] = stats.ms, packs
        return scored[key]

    best: list[Choice] = [Choice(np.inf)] * (max_graphs + 1)

    def consider(graphs: tuple[Bucket, ...], eager: tuple[Bucket, ...]) -> bool:
        """Scores one candidate; keeps it where it improves; True if it did."""
        k = len(graphs)
        if k > max_graphs or (max_size is not None and any(b.size > max_size for b in graphs)):
            return False
        ms = score(graphs, eager)[0]
        if ms < best[k].ms * (1 - 1e-12):
            best[k] = Choice(ms, graphs, eager)
            return True
        return False

    def fit(demands: list[Demand]) -> bool:
        """Scores the optimal graph buckets of ``demands`` with each eager option; True if any improved."""
        improved = False
        segments = [_segment(modality, d) for d in demands] if split else None
        for graphs in dict.fromkeys(optimal_buckets(demands, max_graphs, replay_many, eager_many, max_size,
                                                    segments)):
            top = max((b.size for b in graphs), default=0)
            for eager in eager_options:
                if all(b.size > top for b in eager):
                    improved |= consider(graphs, eager)
        return improved

    def monotone() -> None:
        for k in range(1, max_graphs + 1):  # at most k graphs: never worse than k - 1
            if best[k - 1].ms <= best[k].ms:
                best[k] = best[k - 1]

    if base is not None:  # the base as it is, and with graphs_up_to at each of its sizes
        consider(*_split(base))
        for up_to in sorted({b.size for b in base.buckets}):
            consider(*_split(ModalityGrid(modality, base.buckets, up_to)))
        consider(base.buckets, ())
    fit(items)  # requests alone: exact for step_ms == 0
    monotone()
    if any(len(g) > 1 for g in groups):  # whole batches (what a large bucket packs), then the best grid's packs
        fit(totals)
        monotone()
        for _ in range(iterations):
            top = best[max_graphs]
            if not fit([Demand(r.size, r.batch) for r in score(top.graphs, top.eager)[1]]):
                break
            monotone()
    monotone()
    if split and any(_segment(modality, d) for d in items):
        improve_locally(best, items, consider, eager_options)
        monotone()
    return best


LOCAL_CANDIDATES = 64  # distinct request sizes up to which the local search runs
LOCAL_EVALS = 40  # grids it scores at most, per modality
LOCAL_SHARE = 0.02  # the search runs where more than this share of the units are in requests cut


def improve_locally(best: list[Choice], items: Sequence[Demand], consider, eager_options) -> None:
    """Moves of the largest graph bucket -- another request size for it, one more above it, or
    none -- from each graph count's best grid, kept while the simulator scores them better. The
    program above is exact for requests that run whole; requests cut into pieces by the largest
    bucket make a grid's cost depend on that bucket in a way the program only approximates, so it
    is followed by this search where sizes are few and some request is cut."""
    sizes = sorted({d.size for d in items})
    if len(sizes) > LOCAL_CANDIDATES:
        return
    # each size with the largest batch of the requests it holds, and with the largest of all (the
    # pieces of bigger requests may fill it)
    widest = max(d.batch for d in items)
    cands = sorted({Bucket(s, b) for s in sizes for b in (max(d.batch for d in items if d.size <= s), widest)})
    evals, total = 0, sum(d.size for d in items)
    for k in range(1, len(best)):
        held = best[k].graphs + best[k].eager
        top = max((b.size for b in held), default=0)
        cut = sum(d.size for d in items if d.size > top)
        if cut <= LOCAL_SHARE * total:
            continue  # (almost) nothing is cut under this grid: the program's answer stands
        improved = True
        while improved and evals < LOCAL_EVALS:
            improved = False
            cur = best[k].graphs
            rest = cur[:-1]  # the largest bucket sets the pieces: the move is its size
            low = max((b.size for b in rest), default=0)
            moves = [(*rest, c) for c in cands if c.size > low and (*rest, c) != cur]
            moves += [(*cur, c) for c in cands if cur and c.size > cur[-1].size and len(cur) < k]
            if cur:
                moves.append(rest)
            for graphs in moves:
                top = max((b.size for b in graphs), default=0)
                for eager in eager_options:
                    if evals < LOCAL_EVALS and all(b.size > top for b in eager):
                        evals += 1
                        improved |= consider(graphs, eager)


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` chose.

    Attributes:
        grid: The grid to use: the search's best, or the base when the search did not beat it.
        ms: Its predicted GPU ms on the trace.
        searched, searched_ms: The search's best grid and its predicted ms (may equal ``grid``).
        base, base_ms: The base grid (None when none was given) and its predicted ms.
        base_admissible: Whether the base is within the constraints (graph count and memory).
        from_base: True when ``grid`` is the base.
        per_modality: ``{modality: Choice}`` of ``searched``.
    """

    grid: BucketGrid
    ms: float
    searched: BucketGrid
    searched_ms: float
    base: BucketGrid | None = None
    base_ms: float | None = None
    base_admissible: bool = False
    from_base: bool = False
    per_modality: dict = field(default_factory=dict)


def admissible(grid: BucketGrid, max_graphs: int, max_graph_bytes: float | None) -> bool:
    """Whether ``grid`` has at most ``max_graphs`` graph buckets, each within ``max_graph_bytes``."""
    if grid.num_graphs > max_graphs:
        return False
    if max_graph_bytes is None:
        return True
    return all(estimate_activation_bytes(m, b, grid.dtype) <= max_graph_bytes
               for m in MODALITIES if (g := grid.modality(m)) for b in g.graph_buckets)


def tune(
    records: Sequence[TraceRecord],
    costs: CostModel | None = None,
    max_graphs: int = 24,
    batching: Batching | None = None,
    max_graph_bytes: float | None = None,
    base: BucketGrid | None = None,
    dtype: str | None = None,
    iterations: int = 4,
    *,
    step_ms: float | None = None,
    config: RuntimeConfig | None = None,
) -> TuneResult:
    """Chooses the grid with at most ``max_graphs`` graph buckets that minimises the predicted GPU
    time of a trace (see the module docstring); never worse than an admissible ``base``.

    A modality absent from the trace gets no buckets (it runs as fallbacks only).

    Args:
        records: The trace.
        costs: The cost model; None is the packaged default.
        max_graphs: Most graph buckets in total (both modalities), >= 0.
        batching: A ``BatchPolicy`` (default: the service's defaults) or a window in ms.
        max_graph_bytes: Most estimated activation memory of one graph bucket; None for no limit.
        base: The grid to beat (its buckets also seed the search); None: no comparison.
        dtype: The tuned grid's dtype (default: the base's, else bfloat16).
        iterations: Most re-packing rounds per modality.
        step_ms: Fixed windows instead of ``batching`` (the older ``--step-ms``).
        config: The runtime's configuration the simulator follows (default ``RuntimeConfig()``).

    Returns:
        The chosen grid with its predicted time, and the base's.

    Raises:
        ValueError: an empty trace, or bad limits (``GridError``).
    """
    if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 0:
        raise GridError(f"max_graphs={max_graphs!r} must be an integer >= 0")
    if len(records) == 0:
        raise ValueError("records: the trace is empty; a grid tuned on no requests would only be a guess "
                         "(record a trace with EncoderRuntime(trace_path=...) or write one with omnienc tracegen)")
    if max_graph_bytes is not None and not max_graph_bytes > 0:
        raise GridError(f"max_graph_bytes={max_graph_bytes!r} must be > 0")
    batching = resolve_batching(batching, step_ms)
    costs = costs or CostModel.load()
    dtype = dtype or (base.dtype if base is not None else "bfloat16")
    present = [m for m in MODALITIES if any(r.modality == m for r in records)]
    tuned = {m: tune_modality(records, m, max_graphs, batching, costs, max_graph_bytes, dtype, iterations,
                              base.modality(m) if base is not None else None, config=config) for m in present}
    choice = {m: Choice(0.0) for m in MODALITIES}
    best = np.inf
    for used in range(max_graphs + 1):  # fewest graphs first: a tie keeps the smaller grid
        for k in range(used + 1) if len(present) == 2 else [used]:
            split = dict(zip(present, (k, used - k)))
            ms = sum(tuned[m][n].ms for m, n in split.items())
            if ms < best and not np.isclose(ms, best, rtol=1e-9, atol=0.0):
                best, choice = ms, choice | {m: tuned[m][n] for m, n in split.items()}
    searched = BucketGrid(dtype, choice["vision"].grid("vision"), choice["audio"].grid("audio"))
    searched_ms = simulate(records, searched, batching, costs, config=config).ms
    result = TuneResult(searched, searched_ms, searched, searched_ms, per_modality=choice)
    if base is None:
        return result
    base_ms = simulate(records, base, batching, costs, config=config).ms
    ok = admissible(base, max_graphs, max_graph_bytes)
    from_base = ok and base_ms <= searched_ms
    return TuneResult(base if from_base else searched, base_ms if from_base else searched_ms, searched,
                      searched_ms, base, base_ms, ok, from_base, choice)


__all__ = ["Choice", "TuneResult", "admissible", "optimal_buckets", "tune", "tune_modality"]
