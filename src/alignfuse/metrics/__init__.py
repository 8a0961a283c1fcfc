"""Evaluation metrics.

* :mod:`.fusion`: fusion quality metrics on 0..255 images, reproducing the VIFB MATLAB code (13 metrics with
  VIFB's names) plus VIFF, VIFp_sum, SCD, CC_mean and SSIM_mean. See :data:`METRIC_INFO` for each one's
  convention and direction.
* :mod:`.registration`: MSE, NCC, MI (nats) and EPE for registration on [0, 1] images.
"""

from .fusion import (
    FUSION_METRIC_NAMES,
    METRIC_INFO,
    SCD,
    VIFB_METRIC_NAMES,
    VIFF,
    Avg_gradient,
    CC_mean,
    Cross_entropy,
    Edge_intensity,
    Entropy,
    Mutinf,
    Psnr,
    Qabf,
    Qcb,
    Qcv,
    Rmse,
    SSIM_mean,
    Spatial_frequency,
    Ssim,
    Variance,
    VIFp_sum,
    compute_fusion_metrics,
)
from .registration import (check_point_errors, compute_registration_metrics, epe, mse, mutual_information, ncc,
                           target_registration_error)

__all__ = [
    "METRIC_INFO",
    "FUSION_METRIC_NAMES",
    "VIFB_METRIC_NAMES",
    "compute_fusion_metrics",
    "compute_registration_metrics",
    "mse",
    "ncc",
    "mutual_information",
    "epe",
    "check_point_errors",
    "target_registration_error",
    "Entropy",
    "Variance",
    "Mutinf",
    "Cross_entropy",
    "Qabf",
    "Qcb",
    "Qcv",
    "Ssim",
    "Psnr",
    "Rmse",
    "Spatial_frequency",
    "Avg_gradient",
    "Edge_intensity",
    "VIFF",
    "VIFp_sum",
    "SCD",
    "CC_mean",
    "SSIM_mean",
]
