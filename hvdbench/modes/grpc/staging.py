"""Staged variables (``ps.staged_vars``): fetching from the ps overlaps the computation.

The only module that imports TensorFlow's private ``data_flow_ops``: ``StagingArea`` is
not exported in ``tf.compat.v1``.

How it works, per worker:

* the model computes on a **local copy** of the variables (worker-local, in
  ``LOCAL_VARIABLES`` so that every worker initialises its own);
* a ``StagingArea`` on the worker holds one set of values fetched from the ps;
* each step takes the staged set into the local copy, computes the gradients, and, while
  it computes, stages the ps values **as they are before this step's update** for the
  next step; the update is applied to the ps variables after that read.

Packed (``ps.pack_transfers``), each ps task reads its values at the start of the step,
waiting for nothing of the worker's, and its share of the update waits for that read
there, on the task (:attr:`StagedVariables.read_before`). Were the read to wait for the
take, a control edge from the worker, it would come at the end of the step: a ps task
pulls what it receives from a worker, and the worker serves that pull from its inter-op
pool, which has one thread a core and is busy with the step until its last op (the trace
in docs/parameter_server.md, "Who serves a transfer"). The read then sat in the tail of every step,
between the gradients and the update.

So the gradient applied at step k was computed on the variables of step k-1: one step
stale. Step 0 and step 1 both compute on the initial values (the buffer is primed with
them), and in general the loss a worker reports at step k is the loss of the variables
before step k-1's update. With several workers, "step" means this worker's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import data_flow_ops  # private: StagingArea is not exported

from hvdbench.modes.grpc import packing
from hvdbench.modes.grpc.graph_training import local_model_copy, read_values

v1 = tf.compat.v1


class StagedVariables:
    """A local model fed with one-step-stale values of the ps variables.

    ``refill`` stages the next step's values (run it with the step); ``read_before`` is
    what the step's update must follow: the packed reads on the ps tasks, or, unpacked,
    ``refill`` itself."""

    def __init__(
        self, ps_model: Any, build_local_model: Callable[[], Any], device: str, packed: bool
    ) -> None:
        ps_variables = self.ps_variables = ps_model.trainable_variables
        with tf.device(device):
            self.local_model, self.local_variables = local_model_copy(
                ps_model, build_local_model, share_statistics=not packed
            )
            self.area = data_flow_ops.StagingArea(
                dtypes=[v.dtype.base_dtype for v in ps_variables],
                shapes=[v.shape for v in ps_variables],
                capacity=2,
            )
            self.clear_op = self.area.clear()
            self.prime_op = self.area.put(read_values(ps_variables, device, packed))
            staged = self.area.get()
            staged = staged if isinstance(staged, (list, tuple)) else [staged]
            self.take = tf.group(
                *[lv.assign(value) for lv, value in zip(self.local_variables, staged)]
            )
            # The ps values before this step's update, for the next step.
            if packed:
                values, self.read_before = packing.read_packed(ps_variables, device)
                with tf.control_dependencies([self.take]):
                    self.refill = self.area.put(values)
            else:
                with tf.control_dependencies([self.take]):
                    self.refill = self.area.put(read_values(ps_variables, device, packed))
                self.read_before = [self.refill]

    def prime(self, sess: Any) -> None:
        """Stage the ps values before the first step of a session. A session recreated
        after a lost ps task finds the buffer as the aborted step left it: emptied first,
        so that the staged set is the restored ps values, one, as at the start."""
        sess.run(self.clear_op)
        sess.run(self.prime_op)

    def compute_after_take(self, fn: Callable[[Any], Any]) -> Any:
        """Build ``fn(local_model)`` so that it reads the local copy after the take."""
        with tf.control_dependencies([self.take]):
            return fn(self.local_model)

    def gradients(self, loss: Any) -> list[tuple[Any, Any]]:
        """Gradients w.r.t. the local copy, paired with the ps variables they update."""
        grads = tf.gradients(loss, self.local_variables)
        return list(zip(grads, self.ps_variables))
