"""The training target and loss: epsilon or v, L2 or Huber, min-SNR and debiased weighting."""

from typing import Optional

import torch
import torch.nn.functional as F


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon models) or the velocity (v-prediction)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {prediction_type!r}")


def snr(scheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep.

    diffusers' `training_utils.compute_snr` computes the same, but that module does not import on
    transformers 4.30 (A1111's pin), so the one-line formula lives here.
    """
    alphas_cumprod = scheduler.alphas_cumprod.to(device=timesteps.device, dtype=torch.float32)[timesteps]
    return alphas_cumprod / (1.0 - alphas_cumprod)


def per_sample_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str = "l2", huber_c: float = 0.1) -> torch.Tensor:
    """Mean loss per sample, computed in fp32."""
    prediction, target = prediction.float(), target.float()
    if loss_type == "l2":
        loss = F.mse_loss(prediction, target, reduction="none")
    elif loss_type == "huber":
        # Pseudo-Huber as in kohya sd-scripts: 2c(sqrt((x-y)^2 + c^2) - c)
        loss = 2 * huber_c * (torch.sqrt((prediction - target) ** 2 + huber_c ** 2) - huber_c)
    else:
        raise ValueError(f"unknown loss type {loss_type!r}; expected l2 or huber")
    return loss.mean(dim=list(range(1, loss.dim())))


def loss_weights(scheduler, timesteps: torch.Tensor, min_snr_gamma: float = 0.0, debiased: bool = False) -> Optional[torch.Tensor]:
    """Per-sample weights from min-SNR-gamma and/or debiased estimation; None when neither is on."""
    if not min_snr_gamma and not debiased:
        return None
    values = snr(scheduler, timesteps).float()
    weights = torch.ones_like(values)
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    if min_snr_gamma:
        clipped = torch.minimum(values, torch.full_like(values, float(min_snr_gamma)))
        weights = weights * (clipped / (values + 1) if v_prediction else clipped / values)
    if debiased:
        capped = values.clamp(max=1000)
        weights = weights / (capped + 1 if v_prediction else torch.sqrt(capped))
    return weights
