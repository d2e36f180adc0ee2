"""Exact-layout graphs: a pack whose exact layout comes back replays a graph captured for it.

A pack's *layout* is its items' sizes, in order (``buckets.layout``). When a layout is due for a
graph (``cuda.GraphCache``: its second sighting, if captures have been paying for themselves), the
pack runs eagerly, unpadded, on its exact plan -- those are its results, and the run builds every
kernel plan the capture needs -- and that work is then captured live (``cuda.graphs.capture_live``:
no device sync, errors local to the launching thread, so it can happen while the service serves)
into the lanes' one pool. From then on the layout replays its graph: no padding, no eager launches,
attention chosen for the layout (``dense`` where it suits). Its inputs are read from the lane's
static rows (sized for the largest bucket when exact graphs are on). A layout whose capture fails,
or whose eager run is out of memory, runs on its bucket from then on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

from ..cuda import graphs as cuda_graphs
from .attention_policy import AttentionPolicy
from .buckets import forward, layout, rows_out
from .config import RuntimeConfig
from .modality import Modality
from .plans import upload
from .sightings import EXACT_REPLAY, exact_cache, exact_counts, exact_route


@dataclass
class ExactGraph:
    """A CUDA graph of one exact pack layout: its plan (kept alive: the graph reads it), the stacked
    outputs and row flags it rewrites on replay, and its attention backend."""

    plan: object
    graph: torch.cuda.CUDAGraph
    outputs: tuple[torch.Tensor, torch.Tensor]
    attention: str


class ExactGraphs:
    """One lane's exact-layout graphs (see the module docstring).

    Args:
        modality: the lane's modality.
        inputs: the lane's static input rows (the graphs read their inputs there).
        attention: the lane's attention policy (``exact`` picks each graph's backend).
        config: ``exact_at``, ``exact_max_graphs``, ``exact_seen``, ``exact_credit``, ``exact_refill``.
    """

    def __init__(self, modality: Modality, inputs: torch.Tensor, attention: AttentionPolicy, config: RuntimeConfig):
        self.modality, self.inputs, self.attention = modality, inputs, attention
        self.device = inputs.device
        self.cuda = self.device.type == "cuda"
        self.cache = exact_cache(config)

    def run(self, requests: list, shapes: list, used: int) -> tuple[str | None, tuple[torch.Tensor, ...] | None]:
        """The pack by its exact layout's graph (``sightings.exact_route``): a replay if it has one;
        when the layout is due, an eager run of exactly these requests, then the capture of that
        run's work. Returns the kind of run (``exact_replay``, ``exact_capture``) and the outputs
        and their flags, or ``(None, None)``: the pack runs on its bucket as usual."""
        key = layout(shapes)
        kind, entry = exact_route(self.cache, key)
        if kind == EXACT_REPLAY:
            self.modality.fill(requests, shapes, self.inputs)
            entry.graph.replay()
            return kind, rows_out(entry.outputs, used, self.cuda)
        if kind is None:
            return None, None
        outputs = self._capture(key, requests, shapes, used)
        return (kind if outputs is not None else None), outputs

    def wanted(self, shapes: list) -> bool:
        """Whether a pack of ``shapes`` replays a graph or is due for one (changes nothing): such a
        pack runs alone, not merged with others."""
        return self.cache.wanted(layout(shapes))

    def sighted(self, shapes: list) -> None:
        """Counts a sighting of the layout of a pack run otherwise (merged with others)."""
        self.cache.sight(layout(shapes))

    def _capture(self, key: tuple, requests: list, shapes: list, used: int) -> tuple[torch.Tensor, ...] | None:
        """Runs the pack eagerly on its exact plan (its results), then captures that work as the
        layout's graph. None if even the eager run is out of memory (the bucket path then retries as
        usual)."""
        m = self.modality
        host_plan = m.plan(shapes)  # unpadded
        backend = self.attention.exact(host_plan.seqlens)
        inputs = self.inputs[: sum(m.rows(s) for s in shapes)]
        try:
            plan = upload(host_plan, self.device)
            m.fill(requests, shapes, inputs)
            first = forward(m, inputs, plan, backend)  # this pack's results; warms up what the capture needs
        except torch.OutOfMemoryError:
            self.cache.failed(key)
            return None

        def build() -> ExactGraph:
            graph, outputs = cuda_graphs.capture_live(lambda: forward(m, inputs, plan, backend), self.cache.pool)
            return ExactGraph(plan, graph, outputs, backend)

        self.cache.capture(key, build)
        return rows_out(first, used, self.cuda)


def exact_stats(exact: ExactGraphs | None) -> dict:
    """A lane's exact-graph statistics (zeros without exact graphs): ``exact_graphs`` (held),
    ``exact_attention`` (held per backend), ``exact_captures``, ``exact_graph_replays``,
    ``exact_failures``, ``exact_evictions``, ``exact_refused``."""
    entries = exact.cache.entries() if exact is not None else []
    return {"exact_graphs": len(entries), "exact_attention": dict(Counter(e.attention for e in entries)),
            **exact_counts(exact.cache if exact is not None else None)}


__all__ = ["ExactGraph", "ExactGraphs", "exact_stats"]
