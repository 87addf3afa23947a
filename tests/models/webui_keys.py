"""The key variants of A1111's live `shared.sd_model.state_dict()` (hijacked, wrapped modules)."""

from collections import OrderedDict


def webui_state_dict(family: str, state):
    """Rename keys the way A1111's live `shared.sd_model.state_dict()` shows them."""
    out = OrderedDict()
    for key, tensor in state.items():
        if family == "sdxl" and key.startswith("conditioner.embedders."):
            index, rest = key[len("conditioner.embedders."):].split(".", 1)
            rest = rest.replace("token_embedding.weight", "token_embedding.wrapped.weight")
            out[f"conditioner.embedders.{index}.wrapped.{rest}"] = tensor
            out[f"cond_stage_model.embedders.{index}.wrapped.{rest}"] = tensor  # registered twice
        elif key.startswith("cond_stage_model."):
            rest = key[len("cond_stage_model."):].replace("token_embedding.weight", "token_embedding.wrapped.weight")
            out[f"cond_stage_model.wrapped.{rest}"] = tensor
        else:
            out[key] = tensor
    return out
