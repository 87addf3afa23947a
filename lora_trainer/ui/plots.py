"""The live loss plot (raw and smoothed), drawn with matplotlib into an image.

An image works the same on gradio 3.41 and 4.x, which a native plot component does not.
"""

from typing import List, Optional


def smoothed(values: List[float], weight: float = 0.9) -> List[float]:
    """Exponential moving average with bias correction (what TensorBoard's slider shows)."""
    out, average = [], 0.0
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** index))
    return out


def loss_plot(losses: List[float], first_step: int = 1) -> Optional[object]:
    """A PIL image of the loss curve, or None before the first step."""
    if not losses:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from PIL import Image

    figure = Figure(figsize=(6, 2.6), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    steps = list(range(first_step, first_step + len(losses)))
    axes.plot(steps, losses, color="#9ecbff", linewidth=0.8, label="loss")
    axes.plot(steps, smoothed(losses), color="#0366d6", linewidth=1.8, label="smoothed")
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
