"""The fast engine on a GPU: CUDA graphs over the manual engine's step.

On a GPU the lecture's step is ~40 small kernels, each launched from Python through the dispatcher;
at small batches the GPU waits on the launches, not on the arithmetic. A CUDA graph records the
whole step once — gather, the model's forward, its hand-written backward, the SGD update — on
tensors that never move, and replays it with one launch. Each step copies the minibatch indices
and the learning rate into those static tensors and replays; the arithmetic is exactly the manual
engine's (the same ops.py calls), so the numbers are the manual engine's numbers, and everything but
the step (gradients for verification, the hooks) is the manual engine's.

A graph is recorded per batch size, at the first step that uses it (a few milliseconds).
"""
from __future__ import annotations

import torch

from .fast import check_supported
from .manual import ManualEngine

WARMUP_STEPS = 3  # eager runs on a side stream before recording, as CUDA graph capture requires


class FastCUDAEngine(ManualEngine):
    """The manual engine whose `step` replays a recorded CUDA graph."""

    name = "fast"

    def __init__(self, model, Xtr, Ytr, optimizer=None):
        super().__init__(model, Xtr, Ytr, optimizer)
        check_supported(model, self.optimizer)
        self.graphs: dict[int, tuple] = {}  # batch size -> (graph, static ix, static lr, static loss)
        self._captured_params = None

    # --- recording -----------------------------------------------------------------------------

    def _graph_step(self, ix, lr):
        """The step that is recorded: the manual engine's forward and backward, then SGD in place."""
        model = self.model
        loss, cache = model.forward(self.Xtr[ix], self.Ytr[ix])
        grads = model.backward(cache)
        for k, p in model.params.items():
            p.sub_(grads[k] * lr)  # lr is a 0-dim tensor here, so a new value needs no new graph
        return loss

    @torch.no_grad()
    def _record(self, B: int):
        device = self.model.device
        static_ix = torch.zeros(B, dtype=torch.int64, device=device)
        static_lr = torch.zeros((), dtype=self.model.dtype, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: lets cuBLAS allocate its workspace outside the graph
            for _ in range(WARMUP_STEPS):
                loss, cache = self.model.forward(self.Xtr[static_ix], self.Ytr[static_ix])
                self.model.backward(cache)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = self._graph_step(static_ix, static_lr)
        self.graphs[B] = (graph, static_ix, static_lr, static_loss)
        self._captured_params = {k: v.data_ptr() for k, v in self.model.params.items()}

    # --- what differs from the manual engine -----------------------------------------------------

    def sync_from_model(self):
        """The graphs hold the parameters' addresses: record again if a tensor was replaced. (The graphs
        update the model's own tensors, so sync_to_model has nothing to copy.)"""
        now = {k: v.data_ptr() for k, v in self.model.params.items()}
        if now != self._captured_params:
            self.graphs.clear()

    def step(self, ix, lr):
        B = ix.shape[0]
        if B not in self.graphs:
            self.sync_from_model()
            self._record(B)
        graph, static_ix, static_lr, static_loss = self.graphs[B]
        static_ix.copy_(ix, non_blocking=True)
        static_lr.fill_(lr)
        graph.replay()
        return static_loss.item()
