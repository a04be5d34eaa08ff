"""`python -m recipes.upload_pending DIR [DIR ...]`: log runs that could not reach MLflow.

A recipe whose tracking store was unreachable keeps everything in `<output dir>/mlflow/` and says
so; this command finds every `mlflow/pending.json` under the given directories and logs each as a
new run (params, metrics, artifacts, the TFLite model and its registration). The store is
`--tracking-uri`, else `MLFLOW_TRACKING_URI`, else the one the run was meant for.
Exit code 0: all uploaded; 1: some are still pending; 2: nothing to upload.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kd_keras import tracking
from kd_keras.tracking.upload import PENDING


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.upload_pending", description=__doc__)
    parser.add_argument("directories", nargs="+", help="run output directories (searched)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: see above)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    runs = sorted(
        {p.parent.parent for d in args.directories for p in Path(d).glob(f"**/{PENDING}")}
    )
    if not runs:
        print(f"error: no pending runs under {', '.join(args.directories)}", file=sys.stderr)
        return 2
    failed = 0
    for run in runs:
        try:
            record = tracking.upload_pending(run, tracking_uri=uri)
        except (tracking.TrackingError, FileNotFoundError) as error:
            print(f"still pending: {run}: {error}", file=sys.stderr)
            failed += 1
            continue
        model = f", model {record.model_uri}" if record.model_uri else ""
        print(f"uploaded: {run} -> run {record.run_id} at {record.tracking_uri}{model}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
