"""Training objectives, one small module each, registered by name.

An objective is an object with `loss(model, batch) -> (loss, metrics)`; see `undo.train`
for the optional hooks. Losses (`LOSSES`: ce, distill_kl) and unlearning methods
(`METHODS`) are separate registries; `get(name)` errors list the valid names.
"""

from .base import LOSSES, METHODS

__all__ = ["LOSSES", "METHODS"]

from . import ce, distill_kl, grad_ascent, grad_diff, maxent, npo, repnoise, rmu, sam, simnpo  # noqa: E402,F401,I001  (registers)
