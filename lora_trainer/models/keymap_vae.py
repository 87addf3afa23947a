"""VAE names: diffusers `AutoencoderKL` keys <-> the original `first_stage_model` layout.

The mid-block attention is the one place where shapes differ: the original stores q/k/v/out
as 1x1 convolutions ([C, C, 1, 1]), diffusers as linear layers ([C, C]); the loader turns one
into the other with a reshape view.
"""

from typing import Dict, Tuple

_ATTENTION_RENAMES = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _resnet_inner(rest: str) -> str:
    return rest.replace("conv_shortcut", "nin_shortcut", 1) if rest.startswith("conv_shortcut") else rest


def _mid_block(prefix: str, rest: str) -> Tuple[str, bool]:
    parts = rest.split(".")
    if parts[0] == "resnets":
        return f"{prefix}.mid.block_{int(parts[1]) + 1}.{_resnet_inner('.'.join(parts[2:]))}", False
    if parts[0] == "attentions":
        inner = ".".join(parts[2:])
        for new, old in _ATTENTION_RENAMES.items():
            if inner.startswith(new + "."):
                is_projection = new != "group_norm"
                return f"{prefix}.mid.attn_1.{old}{inner[len(new):]}", is_projection
    raise KeyError(rest)


def vae_key_to_original(key: str, config: Dict) -> Tuple[str, bool]:
    """Map a diffusers VAE key to (original key, needs_conv_reshape).

    `needs_conv_reshape` is true for the mid-block attention projections' weights, which are
    [C, C] here and [C, C, 1, 1] in the original layout.
    """
    levels = len(config["block_out_channels"])
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return key, False
    if part not in ("encoder", "decoder"):
        raise KeyError(f"no original-layout name for VAE key {key!r}")
    head, _, tail = rest.partition(".")
    if head in ("conv_in", "conv_out"):
        return key, False
    if head == "conv_norm_out":
        return f"{part}.norm_out.{tail}", False
    if head == "mid_block":
        original, is_projection = _mid_block(part, tail)
        return original, is_projection and key.endswith(".weight")
    if head in ("down_blocks", "up_blocks"):
        index_text, _, inner = tail.partition(".")
        index = int(index_text)
        if head == "down_blocks":
            level, name = index, "down"
        else:
            level, name = levels - 1 - index, "up"
        kind, _, inner_rest = inner.partition(".")
        if kind == "resnets":
            number, _, leaf = inner_rest.partition(".")
            return f"{part}.{name}.{level}.block.{number}.{_resnet_inner(leaf)}", False
        if kind in ("downsamplers", "upsamplers"):
            leaf = inner_rest.split(".", 1)[1]  # drop the "0"
            sampler = "downsample" if kind == "downsamplers" else "upsample"
            return f"{part}.{name}.{level}.{sampler}.{leaf}", False
    raise KeyError(f"no original-layout name for VAE key {key!r}")
