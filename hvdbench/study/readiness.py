"""When each gradient of a model is ready during a training step: its gradient readiness
profile, for the partial-overlap model of Horovod's exchange (``study/overlap.py``).

Horovod all-reduces a gradient as soon as the backward pass has produced it, while the
backward pass goes on through the earlier layers. How much of the exchange can hide behind
compute therefore depends on *when* the bytes become ready, which is a property of the model
alone: its layers' compute and their gradients' sizes, in backward order.

Compute is estimated from each layer's forward FLOPs per sample (the batch cancels out of
the fractions):

* layers with kernels (``Dense``, ``Conv1D/2D/3D``, ``DepthwiseConv2D``,
  ``SeparableConv2D``): 2 FLOPs per multiply-add, i.e. 2 × kernel elements × output
  positions (output elements / output channels); transposed convolutions, which multiply
  at their input positions, are over-counted by their stride's area;
* pooling: output elements × window; anything else (activations, normalisation, ``Add``,
  ``Lambda``, reshapes): one FLOP per output element, small beside the kernels;
* backward: one forward-sized product per gradient the layer computes: with respect to its
  weights (if it has trainable ones) and with respect to its input (unless no layer before
  it is trained: the step does not differentiate with respect to the images). For a dense or
  convolutional layer in the middle of the network that is the usual 2 × forward.

The step's compute is forward + backward; the gradients of layer l are ready once the
forward pass, and the backward pass of every layer after l and of l itself, are done.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Weight attributes of the layers whose FLOPs are products with a kernel.
KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")

Profile = list[tuple[int, float]]  # (gradient bytes, ready time as a fraction of compute)


@dataclass(frozen=True)
class LayerCost:
    """One layer as the profile sees it, in forward (topological) order."""

    name: str
    forward_flops: float  # per sample
    gradient_bytes: tuple[int, ...]  # one per trainable variable, in the layer's order
    input_gradient: bool  # whether the backward pass differentiates w.r.t. its input

    @property
    def backward_flops(self) -> float:
        products = int(bool(self.gradient_bytes)) + int(self.input_gradient)
        return products * self.forward_flops


def readiness(layers: Sequence[LayerCost]) -> Profile:
    """The profile of a model given as layers in forward order: one (bytes, ready fraction)
    per trainable variable, in backward order (the last layer's variables first).

    The fraction is of forward + backward compute; the first gradient is ready after the
    forward pass and the last layer's backward, the first layer's at 1.0 at the latest.
    """
    forward = sum(layer.forward_flops for layer in layers)
    total = forward + sum(layer.backward_flops for layer in layers)
    out: Profile = []
    done = forward
    for layer in reversed(layers):
        done += layer.backward_flops
        ready = done / total if total > 0 else 1.0
        out += [(b, min(ready, 1.0)) for b in reversed(layer.gradient_bytes)]
    return out


def grouped(profile: Sequence[tuple[float, float]], groups: int) -> list[tuple[float, float]]:
    """Horovod's ``num_groups``: the variables, in forward order, split into ``groups``
    nearly even contiguous lists (``horovod.common.util.split_list``); each group is one
    all-reduce, ready when its last member is. ``groups`` <= 0 leaves the profile as is."""
    if groups <= 0 or not profile:
        return list(profile)
    forward = list(reversed(profile))
    d, r = divmod(len(forward), groups)
    chunks = [forward[i * d + min(i, r) : (i + 1) * d + min(i + 1, r)] for i in range(groups)]
    out = [(sum(b for b, _ in c), max(f for _, f in c)) for c in chunks if c]
    return sorted(out, key=lambda x: x[1])


# ---------------------------------------------------------------------------------------
# From a Keras model (duck-typed: no TensorFlow import here)


def _elements(shape: Any) -> int:
    """Elements per sample of a Keras output shape (batch dimension dropped)."""
    if isinstance(shape, list):
        return sum(_elements(s) for s in shape)
    return math.prod(int(d) for d in tuple(shape)[1:] if d is not None)


def _output_shape(layer: Any) -> Any:
    try:
        return layer.output_shape
    except (AttributeError, RuntimeError):  # a layer called more than once: its first call
        return layer.get_output_shape_at(0)


def _channels(layer: Any, shape: Any) -> int:
    if isinstance(shape, list):
        shape = shape[0]
    axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
    return max(int(tuple(shape)[axis] or 1), 1)


def forward_flops(layer: Any) -> float:
    """Forward FLOPs per sample of one built Keras layer (see the module docstring)."""
    shape = _output_shape(layer)
    outputs = _elements(shape)
    kernels = [getattr(layer, a) for a in KERNEL_ATTRS if getattr(layer, a, None) is not None]
    if kernels:
        positions = outputs / _channels(layer, shape)
        return 2.0 * positions * sum(int(k.shape.num_elements()) for k in kernels)
    pool = getattr(layer, "pool_size", None)
    if pool is not None:
        return float(outputs * math.prod(int(p) for p in pool))
    return float(outputs)


def _flat_layers(model: Any) -> Iterable[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            yield from _flat_layers(layer)
        else:
            yield layer


def layer_costs(model: Any, bytes_per_param: int = 4) -> list[LayerCost]:
    """A built Keras model (functional or sequential) as ``LayerCost`` in forward order.

    Layers are taken in ``model.layers`` order, which is topological; a model with parallel
    branches is treated as if its backward pass ran them one after the other, in reverse."""
    out: list[LayerCost] = []
    trained_before = False
    for layer in _flat_layers(model):
        if type(layer).__name__ == "InputLayer":
            continue
        grads = tuple(
            int(w.shape.num_elements()) * bytes_per_param for w in layer.trainable_weights
        )
        out.append(LayerCost(layer.name, forward_flops(layer), grads, trained_before))
        trained_before = trained_before or bool(grads)
    return out


def gradient_profile(model: Any, bytes_per_param: int = 4) -> Profile:
    """The readiness profile of a built Keras model: (bytes, ready fraction) per trainable
    variable, in backward order. The bytes add up to the gradient bytes of a step."""
    return readiness(layer_costs(model, bytes_per_param))
