"""`demo`: a tiny embedded model and a small generated, captioned dataset, then the tab on them.

Everything is pre-filled (64 px, 40 steps, samples) so that Start works at once on a CPU.
`--no-ui` only builds the files and runs one short training job headless.
"""

import argparse
import random
from pathlib import Path

DEMO_SETTINGS = {
    "dataset": {"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128, "trigger_word": "demochar", "flip": True},
    "network": {"rank": 4, "alpha": 2},
    "train": {"max_steps": 40, "batch_size": 2, "unet_lr": 1e-3, "text_encoder_lr": 5e-4, "scheduler": "constant"},
    "output": {"name": "demo_lora", "save_every_steps": 20},
    "sample": {"every_steps": 10, "prompts": ["demochar, red circle"], "steps": 8},
}


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="build a tiny demo model and dataset and open the tab on them")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="where the demo files go (default ./demo)")
    demo.add_argument("--family", default="sd1", choices=["sd1", "sd2", "sd2-v", "sdxl"])
    demo.add_argument("--port", type=int, default=7861)
    demo.add_argument("--no-ui", action="store_true", help="train once headless instead of serving the tab")
    demo.set_defaults(handler=_demo)


def write_demo_dataset(folder: Path, count: int = 8, seed: int = 0) -> Path:
    """`10_demochar/`: coloured shapes with tag captions whose first tag is the trigger word."""
    from PIL import Image, ImageDraw

    concept = folder / "10_demochar"
    concept.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    colours = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70)}
    for index in range(count):
        size = rng.choice([(96, 96), (128, 96), (96, 128)])
        background = rng.choice(["white", "black"])
        image = Image.new("RGB", size, (255, 255, 255) if background == "white" else (0, 0, 0))
        colour = rng.choice(list(colours))
        shape = rng.choice(["circle", "square"])
        box = (16, 16, size[0] - 16, size[1] - 16)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colours[colour])
        image.save(concept / f"demo_{index:02d}.png")
        (concept / f"demo_{index:02d}.txt").write_text(f"demochar, {colour} {shape}, {background} background\n", encoding="utf-8")
    return folder


def _demo(args) -> int:
    from lora_trainer.models.demo import write_demo_checkpoint

    checkpoint = args.dir / f"tiny-{args.family}.safetensors"
    if not checkpoint.exists():
        write_demo_checkpoint(args.family, checkpoint)
    dataset = args.dir / "dataset"
    if not dataset.exists():
        write_demo_dataset(dataset)
    print(f"demo model: {checkpoint}\ndemo dataset: {dataset}")
    if args.no_ui:
        return _train_once(checkpoint, dataset, args.dir / "output")
    from lora_trainer.cli.ui_command import build_app
    from lora_trainer.host.standalone import StandaloneHost

    host = StandaloneHost(checkpoint, args.dir / "output", dataset, user_data=args.dir / "user_data", extra_defaults=DEMO_SETTINGS)
    print(f"open http://127.0.0.1:{args.port}/ and press Start (Train tab); Ctrl+C to quit")
    build_app(host).launch(server_name="127.0.0.1", server_port=args.port, share=False, inbrowser=False)
    return 0


def _train_once(checkpoint: Path, dataset: Path, output: Path) -> int:
    from lora_trainer.config import parse_dict, raise_for
    from lora_trainer.training.events import EventBus
    from lora_trainer.training.listeners import ConsoleProgress
    from lora_trainer.training.trainer import train

    settings = {**DEMO_SETTINGS, "model": {"checkpoint": str(checkpoint)}}
    settings["dataset"] = {**DEMO_SETTINGS["dataset"], "dir": str(dataset)}
    settings["output"] = {**DEMO_SETTINGS["output"], "dir": str(output), "overwrite": True}
    config, errors = parse_dict(settings)
    raise_for(errors)
    result = train(config, events=EventBus([ConsoleProgress()]))
    return 0 if result.status == "done" else 1
