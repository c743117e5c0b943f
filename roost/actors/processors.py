"""Processor runners: one actor per processor, each on its own cadence.

``ProcessorRunner`` is the scheduler with a single job (``roost.domain.processors.processor_job``),
so one processor's long or failing run never touches another's, and the job's bookkeeping
(status, duration, late) is the scheduler's. A run is ``roost.domain.processors.run_processor``.
"""

from __future__ import annotations

from roost.actors.scheduler import Scheduler
from roost.domain.processors import actor_name, processor_job, processors, run_processor
from roost.plugins.processors import Processor
from roost.runtime.services import Services


class ProcessorRunner(Scheduler):
    """The actor of one processor: its scheduled runs, tracked as job ``session-processor:<name>``."""

    def __init__(self, services: Services, processor: Processor):
        self.processor = processor

        async def run(s: Services) -> dict[str, int]:
            return (await run_processor(s, processor)).counts()

        super().__init__([processor_job(services, processor, run)], name=actor_name(processor.name))


def processor_runners(services: Services) -> list[ProcessorRunner]:
    """The actors of every processor this process runs."""
    return [ProcessorRunner(services, p) for p in processors(services).values()]
