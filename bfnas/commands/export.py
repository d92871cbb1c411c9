"""`bfnas export` and `bfnas demo`."""

from __future__ import annotations

import argparse
import random
import sys

from bfnas.commands.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_arch_arg,
    add_model_args,
    arch_where,
    artifact_cache,
    command,
    console,
    default_cache_dir,
    parse_arch,
    print_json,
    space_and_supernet,
)
from bfnas.errors import InputError
from bfnas.models.outputs import check_output_dir


def register(sub) -> None:
    p = command(
        sub,
        "export",
        "export a subnet to ONNX (FP32 or INT8), cached by content",
        "bfnas export --space minilm-l6 --sample --seed 3 --precision int8 --recipe dynamic "
        "--checkpoint minilm --out artifacts --json",
        cmd_export,
    )
    add_model_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    add_arch_arg(which, required=False)
    which.add_argument("--sample", action="store_true", help="sample one from the space")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument(
        "--recipe",
        default=None,
        help="INT8 recipe: dynamic | qdq | qdq-symmetric (default dynamic)",
    )
    p.add_argument(
        "--fuse",
        action="store_true",
        help="run ONNX Runtime's transformer fusion before quantizing",
    )
    p.add_argument(
        "--calibration-samples",
        type=int,
        default=None,
        help="inputs for static calibration (qdq recipes; default 16)",
    )
    p.add_argument(
        "--fidelity-threshold",
        type=float,
        default=0.99,
        help="minimum cosine vs torch FP32 (default 0.99)",
    )
    p.add_argument(
        "--out",
        default=default_cache_dir(),
        help="artifact cache folder (default $BFNAS_CACHE or ~/.cache/bfnas/artifacts)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from bfnas.models.deploy.recipes import get_recipe

    check_output_dir(args.out, "--out")
    # The --arch text is read before the checkpoint's weights load (cheap checks first).
    cfg = parse_arch(args.arch) if args.arch is not None else None
    space, supernet = space_and_supernet(args)
    if cfg is not None:
        space.check(cfg, where=arch_where(args.arch))
    else:
        cfg = space.sample(random.Random(args.seed))
    if args.precision == "fp32" and args.recipe is not None:
        raise InputError("--recipe", None, "a recipe applies to --precision int8 only")
    if args.calibration_samples is not None and args.calibration_samples < 1:
        raise InputError("--calibration-samples", None, "must be at least 1")
    if not 0 < args.fidelity_threshold <= 1:
        raise InputError("--fidelity-threshold", None, "must be in (0, 1]")
    recipe = (
        get_recipe(args.recipe or "dynamic", args.fuse, args.calibration_samples)
        if args.precision == "int8"
        else None
    )
    art = artifact_cache(args.out, args.fidelity_threshold).build(
        supernet, cfg, args.precision, recipe, fuse=args.fuse
    )
    result = {
        "path": str(art.path),
        "sha256": art.sha256,
        "bytes": art.bytes,
        "precision": art.precision,
        "recipe": art.recipe,
        "fuse": art.fuse,
        "export": art.export,
        "arch": art.arch,
        "arch_key": art.arch_key,
        "key": art.key,
        "cached": art.cached,
        "fidelity": art.fidelity,
        "seconds": art.seconds,
    }
    if args.json:
        print_json(result)
    else:
        f = art.fidelity
        console().print(
            f"{'cached' if art.cached else 'exported'} {art.precision}"
            f"{' ' + art.recipe['name'] if art.recipe else ''}{' fused' if art.fuse else ''} "
            f"{cfg} -> {art.path} ({art.bytes / 1e6:.1f} MB), cosine {f['cosine']:.5f}, "
            f"max |diff| {f['max_abs_diff']:.2e}"
        )
    if not art.fidelity["passed"]:
        sys.stderr.write(
            f"bfnas: export failed fidelity: cosine {art.fidelity['cosine']:.4f} < "
            f"{art.fidelity['threshold']}\n"
        )
        return EXIT_FAILED
    return EXIT_OK
