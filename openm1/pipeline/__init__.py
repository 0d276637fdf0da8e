"""The end-to-end pipeline: task data with chains of thought, the stage runner, the demo, the report."""

from openm1.pipeline.config import PipelineConfig
from openm1.pipeline.demo import demo_config
from openm1.pipeline.runner import PipelineRunner, run_pipeline
from openm1.pipeline.tasks import Splits, build_splits, check_disjoint, question, solution

__all__ = [
    "PipelineConfig",
    "PipelineRunner",
    "Splits",
    "build_splits",
    "check_disjoint",
    "demo_config",
    "question",
    "run_pipeline",
    "solution",
]
