"""Shared PyTorch plumbing for the torch members: seeded randomness, data parallelism, losses, early stopping.

The framework-free parts (batching, the stopping rule, replay answers) are :mod:`sentiloop.models.fitting`'s.

Thread counts are a process setting (:func:`sentiloop.runtime.use_threads`), not a member's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from sentiloop.config import DistillationConfig
from sentiloop.models.base import TrainData
from sentiloop.models.fitting import OptimizerState, Patience, replay_answers
from sentiloop.models.scores import Scorer


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block on torch's generator seeded with ``seed``, then give the caller's state back.

    Initial weights and dropout masks come from torch's global generator (``nn.Dropout`` takes no
    generator of its own); forking it makes a member's randomness depend on its seed alone, without
    changing anyone else's: runs repeat, and training one member never reseeds another.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def data_parallel_rank() -> tuple[int, int]:
    """(rank, world size) of the data-parallel group this process trains in; (0, 1) when alone.

    Ray Train's ``TorchTrainer`` sets the group up (gloo on CPU) before the training function runs.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(parameters: Sequence[torch.nn.Parameter], examples: int) -> None:
    """Make every rank's gradients the example-weighted mean over the group (what DDP computes).

    Each rank's gradient is the mean over its ``examples``; all ranks pass the same parameters in
    the same order (they follow one schedule), a rank with no examples contributes zeros.
    """
    import torch.distributed as dist

    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * examples for p in parameters])
    count = torch.tensor([float(examples)])
    dist.all_reduce(flat)
    dist.all_reduce(count)
    flat /= max(count.item(), 1.0)
    offset = 0
    for p in parameters:
        size = p.numel()
        p.grad = flat[offset : offset + size].view_as(p).clone()
        offset += size


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy, per-example weighted when refinement down-weights doubtful labels."""
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    if weights is None:
        return losses.mean()
    return (losses * weights).sum() / weights.sum().clamp_min(1e-8)


@dataclass
class EarlyStopping(Patience):
    """:class:`Patience` that also keeps the best model state (and the validation logits it gave)."""

    best_state: dict[str, torch.Tensor] | None = None
    best_logits: torch.Tensor | None = None

    def update(self, loss: float, model: torch.nn.Module, logits: torch.Tensor | None = None) -> bool:
        """Record a validation loss (and the logits it came from); returns True when training should stop."""
        if self.improved(loss):
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.best_logits = logits
            return False
        return self.exhausted

    def restore(self, model: torch.nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


@dataclass
class Teacher:
    """The champion's answers on the replayed rows of a training set (learning without forgetting, Li & Hoiem 2016).

    ``probabilities`` (n, classes) are the champion's; ``mask`` marks the rows they hold for. The loss
    is ``weight · T² · KL(teacher_T ‖ student_T)`` summed over a batch's masked rows and divided by
    the batch size, so it scales with the share of replay in the batch; T² keeps its gradients on the
    scale of the cross-entropy's (Hinton et al. 2015).
    """

    probabilities: torch.Tensor
    mask: torch.Tensor
    weight: float
    temperature: float

    def loss(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        keep = self.mask[rows]
        if not bool(keep.any()):
            return logits.new_zeros(())
        t = self.temperature
        target = torch.softmax(torch.log(self.probabilities[rows][keep].clamp_min(1e-12)) / t, dim=1)
        student = torch.log_softmax(logits[keep] / t, dim=1)
        divergence = torch.nn.functional.kl_div(student, target, reduction="sum")
        return self.weight * t * t * divergence / len(rows)


def champion_teacher(champion: Scorer, train: TrainData, distillation: DistillationConfig) -> Teacher | None:
    """``champion``'s answers on ``train``'s replayed rows (None when there are none, or distillation is off)."""
    answers = replay_answers(champion, train, distillation)
    if answers is None:
        return None
    probabilities, mask = answers
    return Teacher(torch.from_numpy(probabilities), torch.from_numpy(mask), distillation.weight, distillation.temperature)


def named_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> OptimizerState:
    """Optimizer state keyed ``<parameter name>/<slot>`` instead of positional indices, as numpy arrays."""
    names = {id(param): name for name, param in model.named_parameters()}
    ordered = [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
    state = optimizer.state_dict()
    tensors = {
        f"{ordered[index]}/{slot}": value.detach().cpu().numpy().copy()
        for index, slots in state["state"].items()
        for slot, value in slots.items()
        if isinstance(value, torch.Tensor)
    }
    groups = [
        {**{k: list(v) if isinstance(v, tuple) else v for k, v in group.items() if k != "params"},
         "params": [ordered[index] for index in group["params"]]}
        for group in state["param_groups"]
    ]
    return OptimizerState(tensors, {"type": type(optimizer).__name__, "param_groups": groups})
