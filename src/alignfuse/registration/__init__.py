"""Registration: every registrar of alignfuse, one module per family.

* :mod:`.global_search` -- :class:`GlobalSearchRegistrar`, the cross-modal global stage for real rigs
  (coarse rotation x scale x translation search + Lucas-Kanade refinement on MIND descriptors);
* :mod:`.classical` -- phase correlation, ECC (OpenCV), elastix (optional);
* :mod:`.instance` -- :class:`MINDRegistrar`, per-pair deformable optimisation on MIND descriptors;
* :mod:`.learned` -- :class:`DeformableRegistrar`, the MRRN / U-Net networks with their fallback;
* :mod:`.rig` -- :class:`RigModel` (rig files), :func:`estimate_rig` (calibration from many frames),
  :class:`RigRegistrar` (a calibrated rig as the global stage);
* :mod:`.chain` -- :class:`ChainRegistrar`, stages composed into one field under one acceptance policy;
* :mod:`.features` -- the shared features and similarities (orientation field, Pearson, MIND distance).

All follow :class:`alignfuse.stages.Registrar` and the field convention of :mod:`alignfuse.warp`.
"""

from ..stages import IdentityRegistrar
from .chain import ChainRegistrar, Stage, affine_fraction, inverse_residual
from .classical import (ELASTIX_MISSING, ECCRegistrar, ElastixRegistrar, PhaseCorrelationRegistrar, REGISTRARS,
                        field_from_matrix, gradient_magnitude, phase_correlation)
from .features import pearson
from .global_search import GlobalSearchRegistrar, describe_model, refine_matrix
from .instance import MINDRegistrar
from .learned import DeformableRegistrar
from .rig import RigModel, RigRegistrar, estimate_rig

__all__ = ["IdentityRegistrar", "ChainRegistrar", "Stage", "affine_fraction", "inverse_residual", "ECCRegistrar",
           "ElastixRegistrar", "PhaseCorrelationRegistrar", "REGISTRARS", "ELASTIX_MISSING", "field_from_matrix", "gradient_magnitude",
           "phase_correlation", "pearson", "GlobalSearchRegistrar", "describe_model", "refine_matrix",
           "MINDRegistrar", "DeformableRegistrar", "RigModel", "RigRegistrar", "estimate_rig"]
