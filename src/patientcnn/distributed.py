"""Which process of a distributed (DDP) training run this is, before Lightning knows.

Lightning's DDP launcher starts one process per device by running the same command
again (``LOCAL_RANK`` set); ``srun`` and ``torchrun`` start every rank themselves
(``SLURM_PROCID``, ``RANK``). Every rank runs the training task, because each fit of
each ensemble member is a collective step; only rank 0 writes the run's outputs.
"""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def secondary_rank() -> bool:
    """True in a process started for a rank other than 0 of a distributed run: it shares
    rank 0's run folder and must write nothing there."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def rank_zero_value(value):
    """Rank 0's ``value`` on every rank of a running distributed job (what only rank 0
    could compute, such as a step chosen from checkpoints on its disk); else ``value``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
