"""Which layers a network adapts: kohya's defaults, found by walking the diffusers modules.

UNet: every Linear and 1x1 Conv inside the transformer blocks (attn1/attn2 q, k, v, out;
ff.net.0.proj, ff.net.2; proj_in, proj_out). LoCon adds the ResNet blocks and the down/up
samplers: 3x3 convs use the conv rank, their Linear (`time_emb_proj`) and 1x1 shortcut the
normal rank. Text encoders: self-attention q, k, v, out and the MLP fc1, fc2.
"""

from dataclasses import dataclass
from typing import List

from torch import nn

_TRANSFORMER_LEAVES = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "ff.net.0.proj", "ff.net.2",
)
_TEXT_LEAVES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
_RESNET_LEAVES = ("conv1", "conv2", "time_emb_proj", "conv_shortcut")


@dataclass(frozen=True)
class Target:
    path: str  # module path inside its component, e.g. "down_blocks.0.attentions.0.proj_in"
    conv3x3: bool  # uses the conv rank/alpha (LoCon)


def _is_conv3x3(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def unet_targets(unet: nn.Module, include_conv: bool) -> List[Target]:
    """Kohya's default UNet targets, plus ResNet/sampler layers when `include_conv` (LoCon)."""
    found: List[Target] = []
    for path, module in unet.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        parts = path.split(".")
        in_transformer = "attentions" in parts
        if in_transformer:
            tail = path.split(".transformer_blocks.")[-1]
            leaf = tail.split(".", 1)[1] if ".transformer_blocks." in path else ""
            if leaf in _TRANSFORMER_LEAVES or parts[-1] in ("proj_in", "proj_out"):
                found.append(Target(path, False))
            continue
        if not include_conv:
            continue
        if "resnets" in parts and parts[-1] in _RESNET_LEAVES:
            found.append(Target(path, _is_conv3x3(module)))
        elif ("downsamplers" in parts or "upsamplers" in parts) and parts[-1] == "conv":
            found.append(Target(path, True))
    return found


def text_encoder_targets(encoder: nn.Module) -> List[Target]:
    found = []
    for path, module in encoder.named_modules():
        if isinstance(module, nn.Linear) and path.startswith("text_model.encoder.layers.") and any(path.endswith("." + leaf) for leaf in _TEXT_LEAVES):
            found.append(Target(path, False))
    return found

