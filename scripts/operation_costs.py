"""What each operation of a call costs, and how long it would take at a card's spec-sheet peaks.

FLOPs come from torch's own formulas (torch.utils.flop_counter). Bytes are what the operation reads and writes if
each of its tensors crosses memory once: a broadcast operand counts its distinct elements, a view counts nothing.
An operation's roofline time is the slower of its FLOPs at the card's peak rate and its bytes at the card's
bandwidth: a model, not a bound (tensors that stay in a GPU's L2 cache can beat it). Under FakeTensorMode nothing
is computed, so a 512×512 call can be costed on any machine.
"""
from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry, sdpa_flop_count

# Dense fp16 tensor-core FLOP/s with fp32 accumulation (what PyTorch's fp16 matrix products use), memory bytes/s.
CARDS = {
    "H100 SXM": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100 SXM": (312e12, 2.04e12),
    "RTX 4090": (165e12, 1.008e12),
}

# attention whole, and the CPU kernel it becomes where autograd takes it apart first (outside inference mode)
ATTENTION = {torch.ops.aten.scaled_dot_product_attention, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu}
# a question about a tensor, and a view the other view checks miss
COPY_NOTHING = {torch.ops.prim.device, torch.ops.aten._unsafe_view}


@dataclass(frozen=True)
class Operation:
    name: str
    flops: int
    bytes: int

    def seconds(self, flops_per_s: float, bytes_per_s: float) -> float:
        return max(self.flops / flops_per_s, self.bytes / bytes_per_s)


def distinct_elements(t: torch.Tensor) -> int:
    """Elements behind a tensor: an expanded (stride 0) dimension repeats what is already counted."""
    count = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride:
            count *= size
    return count


class OperationCosts(TorchDispatchMode):
    """Records an Operation for every operation that runs a kernel under it.

    Composite operations are taken apart into those, as torch's FlopCounterMode does. Attention stays whole, as a
    GPU's fused kernels run it: on a CPU torch turns it into a kernel its FLOP formulas do not know, for which
    FlopCounterMode counts 0.
    """

    def __init__(self, float_bytes: int = 2):
        super().__init__()
        self.float_bytes = float_bytes  # fp16's, as on a GPU, whatever dtype the call runs in here
        self.operations: list[Operation] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet not in flop_registry and packet not in ATTENTION and packet not in COPY_NOTHING:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if packet not in COPY_NOTHING and not func.is_view:
            self.operations.append(Operation(str(packet), self._flops(packet, args, kwargs, out),
                                             self._bytes(args, kwargs, out)))
        return out

    @staticmethod
    def _flops(packet, args, kwargs, out) -> int:
        if packet in ATTENTION:
            return sdpa_flop_count(*(t.shape for t in args[:3]))
        if packet in flop_registry:
            return flop_registry[packet](*args, **kwargs, out_val=out)
        return 0

    def _bytes(self, args, kwargs, out) -> int:
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        return sum(distinct_elements(t) * (self.float_bytes if t.is_floating_point() else t.element_size())
                   for t in tensors)

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.operations)

    def roofline_seconds(self, card: str) -> float:
        return sum(op.seconds(*CARDS[card]) for op in self.operations)

    def roofline_seconds_by_operation(self, card: str) -> Counter:
        seconds = Counter()
        for op in self.operations:
            seconds[op.name] += op.seconds(*CARDS[card])
        return seconds
