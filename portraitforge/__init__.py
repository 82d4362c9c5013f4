"""portraitforge: prompt -> draft -> detect -> upscale -> swap to a cached identity -> blend."""

# Defined before the imports below: submodules read it while the package initialises.
__version__ = "0.1.0"

from portraitforge.config import RefineConfig  # noqa: E402
from portraitforge.embeddings_cache.store import IdentityStore  # noqa: E402
from portraitforge.pipelines.refine import RefinePipeline  # noqa: E402
from portraitforge.types import Face, Identity, RefineReport, RefineResult, Status  # noqa: E402

__all__ = [
    "Face",
    "Identity",
    "IdentityStore",
    "RefineConfig",
    "RefinePipeline",
    "RefineReport",
    "RefineResult",
    "Status",
    "__version__",
]
