"""`ui`: serve the Train LoRA tab standalone (the same Blocks A1111 mounts).

Listens on 127.0.0.1 unless --listen. On a non-loopback address it refuses to start without
--auth user:password (or an explicit --insecure-no-auth, which prints a warning), and file
inputs are confined to --allowed-root folders (default: the current folder and the home folder).
"""

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    ui = sub.add_parser("ui", help="serve the Train LoRA tab in a browser")
    ui.add_argument("--checkpoint", type=Path, help="base model (.safetensors/.ckpt or diffusers folder)")
    ui.add_argument("--dataset", type=Path, help="dataset folder to pre-fill")
    ui.add_argument("--output", type=Path, default=Path("output"), help="where LoRA files go (default ./output)")
    ui.add_argument("--port", type=int, default=7861)
    ui.add_argument("--listen", action="store_true", help="listen on all interfaces (0.0.0.0) instead of 127.0.0.1")
    ui.add_argument("--auth", help="user:password required on a non-loopback address")
    ui.add_argument("--insecure-no-auth", action="store_true", help="listen on the network without a password (not recommended)")
    ui.add_argument("--allowed-root", action="append", type=Path, default=[], help="folders the UI may use when listening (repeatable)")
    ui.set_defaults(handler=_ui)


REPO = Path(__file__).resolve().parents[2]


def build_app(host):
    """The tab as its own app, with the extension's style.css and JS that A1111 would inject."""
    from lora_trainer.ui.compat import js, queue_kwargs
    from lora_trainer.ui.tab import build_tab

    app = build_tab(host)
    css = REPO / "style.css"
    if css.is_file():
        app.css = (app.css or "") + css.read_text(encoding="utf-8")
    scripts = sorted((REPO / "javascript").glob("*.js"))  # every one, in A1111's order (sorted by name)
    if scripts:
        code = "\n".join(script.read_text(encoding="utf-8") for script in scripts)
        with app:
            app.load(None, **js("() => { " + code + " }"))
    return app.queue(**queue_kwargs(4))  # every open page polls once a second; clicks must not wait behind that


def listen_settings(args):
    """(auth, allowed roots) for the command line: both None on loopback; on the network a
    password (or an explicit, warned --insecure-no-auth) and folders confined to the roots."""
    from lora_trainer.errors import UserError

    if not args.listen:
        return None, None
    auth = None
    if args.auth:
        if ":" not in args.auth:
            raise UserError("--auth must be user:password")
        auth = tuple(args.auth.split(":", 1))
    elif not args.insecure_no_auth:
        raise UserError("--listen exposes this machine's files and GPU to the network: add --auth user:password "
                        "(or --insecure-no-auth if you really mean it)")
    else:
        print("WARNING: listening on the network without a password (--insecure-no-auth): anyone who can reach "
              "this port can train on this machine and read and write under the allowed folders", file=sys.stderr, flush=True)
    roots = [p.expanduser().resolve() for p in args.allowed_root] or [Path.cwd().resolve(), Path.home().resolve()]
    return auth, roots


def _ui(args) -> int:
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.ui.compat import launch_kwargs

    auth, roots = listen_settings(args)
    host = StandaloneHost(args.checkpoint, args.output, args.dataset, allowed_roots=roots)
    app = build_app(host)
    app.launch(server_name="0.0.0.0" if args.listen else "127.0.0.1", server_port=args.port, share=False,
               inbrowser=False, **launch_kwargs(auth))
    return 0
