"""Snakemake scheduler plugin ``phase-energy`` (``--scheduler phase-energy``): ready jobs by priority, each that fits.

Snakemake's greedy scheduler weighs every ready job in every round: a reward per job (its priority, the
sizes of its input and temporary files) and a knapsack heuristic over them. On this workflow's grids of
thousands of independent points run on one machine, every round starts one job or a few, so that work grows
with the square of the grid: on the default grid (1680 points, ``--cores 1``) it was the largest part of
Snakemake's own time in a profile of the main job. This workflow has no temporary files and its jobs
ask for the same kinds of resources (cores, a GPU), so there is nothing for the heuristic to weigh. This
scheduler takes the ready jobs in order of priority (highest first; where priorities tie, in the order
Snakemake lists them), starts each one that fits in the resources left, and stops once no core or job slot
is left. The workflow's own profile (``profiles/default``) names it, so every run of the workflow uses it,
a cluster profile's too (there a job slot, ``_nodes``, is one more resource each job takes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from snakemake_interface_common.io import AnnotatedStringInterface
from snakemake_interface_scheduler_plugins.base import SchedulerBase
from snakemake_interface_scheduler_plugins.interfaces.jobs import JobSchedulerInterface

# resources whose exhaustion ends a round: a job always takes at least one of each
_EVERY_JOB_TAKES = ("_cores", "_nodes", "_job_count")


class Scheduler(SchedulerBase):
    """First fit in order of priority."""

    def select_jobs(
        self,
        selectable_jobs: Sequence[JobSchedulerInterface],
        remaining_jobs: Sequence[JobSchedulerInterface],
        available_resources: Mapping[str, int | str],
        input_sizes: dict[AnnotatedStringInterface, int],
    ) -> Sequence[JobSchedulerInterface]:
        """The jobs to start now: by priority, each that fits in what the ones before it left."""
        left = {name: v for name, v in available_resources.items() if isinstance(v, int)}
        jobs = list(selectable_jobs)
        priority = [job.priority for job in jobs]
        order: Sequence[int] = range(len(jobs))
        if len(set(priority)) > 1:  # a stable sort: ties keep Snakemake's order
            order = sorted(order, key=lambda i: -priority[i])
        chosen = []
        for i in order:
            if any(left.get(name, 1) <= 0 for name in _EVERY_JOB_TAKES):
                break
            need = {name: v for name, v in jobs[i].scheduler_resources.items()
                    if name in left and isinstance(v, int)}
            if all(v <= left[name] for name, v in need.items()):
                chosen.append(jobs[i])
                for name, v in need.items():
                    left[name] -= v
        return chosen
