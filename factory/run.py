"""``python -m factory.run``: the command line of the factory job.

    python -m factory.run --n 16                                   # laptop: local Ray, tiny preset
    ray job submit --working-dir . -- python -m factory.run --n 100000 --preset flux-dev \\
        --source s3://bucket/photos --out s3://bucket/run1         # cluster

Re-running the same command on the same ``--out`` resumes; a larger ``--n`` extends the dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from factory.config import PRESETS, ConfigError, load_config

EXIT_INCOMPLETE = 3
EXIT_STAGE_FAILING = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m factory.run",
        description="Manufacture n accepted artifact samples as Parquet shards (resumable).",
        epilog="Outputs: OUT/data/*.parquet, OUT/README.md (dataset card), OUT/report.json, "
               "OUT/flawforge.json (the run's config, guards resume). Exit status: 0 done, "
               f"2 bad arguments or config, {EXIT_INCOMPLETE} sources exhausted before n accepted, "
               f"{EXIT_STAGE_FAILING} a stage kept failing (server down or ignoring the JSON schema, out of "
               "memory, a bug: fix it and re-run the same command).",
    )
    parser.add_argument("--n", type=int, default=None,
                        help="number of ACCEPTED samples the output must hold when the job ends "
                             "(required, except with --print-config)")
    parser.add_argument("--preset", choices=PRESETS, default="tiny",
                        help="model and schedule preset (default: tiny, random CPU models)")
    parser.add_argument("--source", default=None,
                        help="'samples' (bundled photos, default), a folder, a glob, an fsspec URI "
                             "(s3://, gs://) or a Parquet file/dir with an image column")
    parser.add_argument("--out", default="runs/latest", help="output folder or fsspec URI (default runs/latest)")
    parser.add_argument("--config", default=None, help="YAML file overriding the preset")
    parser.add_argument("--seed", type=int, default=None, help="run seed (part of every sample id)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config value, e.g. --set injection.solver=fireflow (repeatable)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else start a local Ray)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit (backend openai: after checking the server)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging verbosity (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n is None and not args.print_config:
        parser.error("the following arguments are required: --n")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = list(args.overrides)
    if args.source is not None:
        overrides.append(f"source.uri={json.dumps(args.source)}")
    if args.seed is not None:
        overrides.append(f"factory.seed={args.seed}")
    if args.ray_address is not None:
        overrides.append(f"factory.ray_address={json.dumps(args.ray_address)}")
    try:
        config = load_config(args.preset, file=args.config, overrides=overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from factory.failures import StageFailingError
    from factory.vlm_service import check_vlm_server

    if args.print_config:  # backend openai: also checks the server (and names the model it serves)
        try:
            config, failed = check_vlm_server(config), None
        except StageFailingError as err:
            failed = err
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        if failed is not None:
            print(f"error: {failed}", file=sys.stderr)
            return EXIT_STAGE_FAILING
        return 0

    from factory.pipeline import OutputMismatchError, run_factory

    try:
        config = check_vlm_server(config)  # backend openai: a server that ignores the schema stops here
        report = run_factory(args.n, config, args.out)
    except (OutputMismatchError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StageFailingError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_STAGE_FAILING
    print(json.dumps(report, indent=2))
    if not report["complete"]:
        print(f"incomplete: {report['accepted']} of {args.n} accepted; see report.json", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


if __name__ == "__main__":
    sys.exit(main())
