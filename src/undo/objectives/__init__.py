"""Training objectives, one small module each, registered by name.

An objective is an object with `loss(model, batch) -> (loss, metrics)`; see `undo.train`
for the optional hooks. `OBJECTIVES.get(name)` errors list the valid names.
"""

from .base import OBJECTIVES

__all__ = ["OBJECTIVES"]

from . import ce, distill_kl, grad_ascent, grad_diff, maxent, npo, repnoise, rmu, sam, simnpo  # noqa: E402,F401,I001  (registers)
