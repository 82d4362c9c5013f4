"""portraitforge: prompt -> draft -> detect -> upscale -> swap to a cached identity -> blend."""

from portraitforge.config import RefineConfig
from portraitforge.pipelines.refine import RefinePipeline
from portraitforge.types import Face, Identity, RefineReport, RefineResult, Status

__version__ = "0.1.0"

__all__ = [
    "Face",
    "Identity",
    "RefineConfig",
    "RefinePipeline",
    "RefineReport",
    "RefineResult",
    "Status",
    "__version__",
]
