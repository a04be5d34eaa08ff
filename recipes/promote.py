"""`python -m recipes.promote`: move a registered model's `champion` alias to its challenger.

Compares the challenger (alias `challenger`, or `--version`) with the champion on a run metric,
checks the deployment gates, moves `champion` only if everything passes, and records the decision
and its reasons as tags on the version. Exit code 0: promoted; 1: not promoted; 2: bad input;
3: the tracking store cannot be used (e.g. the server does not answer).

The store is `--tracking-uri`, else `MLFLOW_TRACKING_URI`, else `sqlite:///mlflow.db` in the
working directory.
"""

from __future__ import annotations

import argparse
import os
import sys

from kd_keras import tracking


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m recipes.promote", description=__doc__)
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--metric", required=True, help="run metric, e.g. tflite_accuracy")
    parser.add_argument("--version", help="version to promote (default: alias challenger)")
    parser.add_argument(
        "--min-delta", type=float, default=0.0, help="required margin over the champion"
    )
    parser.add_argument("--max-size-kb", type=float, help="gate on tflite_size_kb")
    parser.add_argument("--max-latency-ms", type=float, help="gate on tflite_latency_ms")
    parser.add_argument("--min-parity", type=float, help="gate on tflite_parity")
    parser.add_argument(
        "--lower-is-better", action="store_true", help="the metric is a loss or an error"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: see above)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    uri = tracking.resolve_tracking_uri(args.tracking_uri, os.environ)
    gates = tracking.Gates(
        min_delta=args.min_delta,
        max_size_kb=args.max_size_kb,
        max_latency_ms=args.max_latency_ms,
        min_parity=args.min_parity,
    )
    try:
        decision = tracking.promote(
            args.model,
            args.metric,
            tracking_uri=uri,
            gates=gates,
            version=args.version,
            higher_is_better=not args.lower_is_better,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except tracking.TrackingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    print(decision.table())
    return 0 if decision.promoted else 1


if __name__ == "__main__":
    sys.exit(main())
