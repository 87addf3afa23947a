"""`demo-model` and `inspect`: make a tiny checkpoint; describe a checkpoint or LoRA file."""

import argparse
import json
from pathlib import Path

from lora_trainer.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo-model", help="write a tiny random checkpoint in the original single-file layout")
    demo.add_argument("--family", required=True, choices=["sd1", "sd2", "sd2-v", "sdxl"])
    demo.add_argument("--out", required=True, type=Path, help="output .safetensors path")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo_model)

    inspect = sub.add_parser("inspect", help="describe a checkpoint (or LoRA) file")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(handler=_inspect)


def _demo_model(args) -> int:
    from lora_trainer.models.demo import write_demo_checkpoint

    if args.out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, not {args.out.name!r}")
    path = write_demo_checkpoint(args.family, args.out, seed=args.seed)
    print(f"wrote {path} (tiny {args.family} model, seed {args.seed})")
    return 0


def _inspect(args) -> int:
    from lora_trainer.models.inspect_checkpoint import inspect_checkpoint

    report = inspect_checkpoint(args.file)
    if args.json:
        print(json.dumps(report))
        return 0
    params = report["parameters"]
    print(f"{report['file']}: {report['family']} checkpoint, {report['prediction_type']}, {report['dtype']}")
    print(f"  UNet {params['unet']:,} parameters, VAE {params['vae']:,}, text encoders {', '.join(f'{n:,}' for n in params['text_encoders'])}")
    for note in report["notes"]:
        print(f"  note: {note}")
    return 0
