"""A local web page to try the saliency models: drop a photo, see the heat map, crop it to aspect ratios.

    python app.py                                   # the built-in model (fastgaze), http://127.0.0.1:7860
    python app.py --model runs/b-seed0 --model teacher=weights/model_salicon_cpu.pb --port 8080

Needs the web extra: pip install -e ".[web]". The page is served on this machine only (127.0.0.1) unless
--host says otherwise; photos never leave the machine that runs this command.
"""

import argparse
import os
import sys

from argtypes import fail, run_main, warn
from inference.web import DEFAULT_MODELS

PROG = "app.py"

DESCRIPTION = """Serve a web page where anyone can drop a photo and see where people look: the saliency map as a
heat map and as an image, crops of the photo to chosen aspect ratios (1:1, 16:9, 4:5, 2:1 or any W:H) around
what draws the eye, and the map to download (PNG and float32 .npy). Models load before the page opens."""


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument(
        "--model",
        action="extend",
        nargs="+",
        metavar="[NAME=]PATH_OR_RUN_DIR",
        help="models to offer in the page's model menu (the first is selected); --model A B and --model A "
        "--model B both give two. Each is anything "
        "predict.py --model takes: a run folder from train.py, a student SavedModel, an export from "
        "export_student.py (.onnx, OpenVINO .xml, .tflite), an MSI-Net teacher file, or a built-in model name. "
        "The menu shows NAME, else the folder or file name. "
        f"Default: {', '.join(DEFAULT_MODELS)}",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (default: %(default)s, this machine only; 0.0.0.0 makes the page "
                        "reachable from the network, with no password)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    return parser


def _serve(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535. Received: {args.port}")
    try:
        import gradio  # noqa: F401
    except ImportError:
        return fail(PROG, "the web page needs Gradio: pip install -e \".[web]\"")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from datasets.io import import_tensorflow_quietly

    import_tensorflow_quietly()  # here, not at import time: --help and argument errors stay instant
    from inference.web import Models, build_app, launch, models_from_args

    models = Models(models_from_args(args.model or DEFAULT_MODELS))
    for name in models.names:
        print(f"{PROG}: loading {name} ({models.source(name)})", file=sys.stderr)
        models.get(name)  # a PhotoError (a ValueError) names the model that does not load
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(PROG, f"serving on {args.host}: anyone who can reach this machine on port {args.port} can use the page")
    app = build_app(models)
    try:
        launch(app, host=args.host, port=args.port, prevent_thread_lock=True, quiet=True)
    except OSError as e:
        return fail(PROG, f"cannot serve on {args.host}:{args.port} ({e}); choose another --port")
    print(f"{PROG}: open {app.local_url} in a browser; Ctrl+C stops the page", file=sys.stderr)
    app.block_thread()
    return 0


def main(argv=None):
    """Serve the page until Ctrl+C; returns the exit code (argtypes: 0, 1, 2 or 130)."""
    return run_main(_serve, argv, prog=PROG, again="run the same command again to serve the page")


if __name__ == "__main__":
    sys.exit(main())
