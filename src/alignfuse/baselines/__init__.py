"""Classical baselines: registrars (phase correlation, ECC, elastix) and fusers (average, max,
Laplacian pyramid, guided-filter fusion), with name -> class tables for configuration files.

``ElastixRegistrar`` needs the optional extra ``alignfuse[baselines]`` (itk-elastix), imported
only when it is constructed.
"""

from .fusion import FUSERS, AverageFuser, GuidedFilterFuser, LaplacianPyramidFuser, MaxFuser
from .registration import (
    REGISTRARS,
    ECCRegistrar,
    ElastixRegistrar,
    IdentityRegistrar,
    PhaseCorrelationRegistrar,
)

__all__ = [
    "REGISTRARS",
    "FUSERS",
    "IdentityRegistrar",
    "PhaseCorrelationRegistrar",
    "ECCRegistrar",
    "ElastixRegistrar",
    "AverageFuser",
    "MaxFuser",
    "LaplacianPyramidFuser",
    "GuidedFilterFuser",
]
