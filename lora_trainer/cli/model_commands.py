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
    inspect.add_argument("--check", action="store_true", help="LoRA: map every key to a module of its base model; exit 1 listing any that do not match")
    inspect.set_defaults(handler=_inspect)


def _demo_model(args) -> int:
    from lora_trainer.models.demo import write_demo_checkpoint

    if args.out.suffix != ".safetensors":
        raise UserError(f"--out must end in .safetensors, not {args.out.name!r}")
    path = write_demo_checkpoint(args.family, args.out, seed=args.seed)
    print(f"wrote {path} (tiny {args.family} model, seed {args.seed})")
    return 0


def _is_lora(path: Path) -> bool:
    from lora_trainer.models.inspect_checkpoint import _meta_state_dict

    if path.suffix.lower() != ".safetensors" or not path.is_file() or path.stat().st_size == 0:
        return False
    return any(key.startswith("lora_") for key in _meta_state_dict(path))


def _inspect_lora(args) -> int:
    from lora_trainer.networks.inspect_lora import inspect_lora

    report = inspect_lora(args.file, check=args.check)
    unmatched = report.get("unmatched", [])
    if args.json:
        print(json.dumps(report))
    else:
        modules = report["modules"]
        print(f"{report['file']}: {report['family'] or 'unknown-family'} {report['network']}, rank {report['rank']}, alpha {report['alpha']}")
        print(f"  {modules['unet']} UNet modules, {modules['text_encoder']} text-encoder modules")
        if args.check:
            print("  every key matches a module" if not unmatched else "  unmatched:\n    " + "\n    ".join(unmatched))
    return 1 if unmatched else 0


def _inspect(args) -> int:
    from lora_trainer.models.inspect_checkpoint import inspect_checkpoint

    if _is_lora(args.file):
        return _inspect_lora(args)
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
