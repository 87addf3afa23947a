"""`demo`: build the tiny embedded model(s) in ./demo and show what the engine sees in them."""

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="build a tiny demo model and run the main job on it")
    demo.add_argument("--dir", type=Path, default=Path("demo"), help="where the demo files go (default ./demo)")
    demo.add_argument("--family", default="sd1", choices=["sd1", "sd2", "sd2-v", "sdxl"])
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from lora_trainer.models import load_bundle
    from lora_trainer.models.demo import write_demo_checkpoint

    checkpoint = args.dir / f"tiny-{args.family}.safetensors"
    if not checkpoint.exists():
        write_demo_checkpoint(args.family, checkpoint)
    bundle = load_bundle(checkpoint)
    counts = bundle.parameter_counts()
    print(f"demo model: {checkpoint} ({bundle.family}, {bundle.prediction_type})")
    print(f"  UNet {counts['unet']:,} parameters, VAE {counts['vae']:,}, text encoders {counts['text_encoders']}")
    return 0
