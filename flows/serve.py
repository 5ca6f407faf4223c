"""Serve build-avrt as a Prefect deployment named ``build-avrt/build-avrt``.

    prefect server start &                                  # or use Prefect Cloud
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve &                                 # registers the deployment and polls for runs
    prefect deployment run build-avrt/build-avrt --watch \\
        --params '{"manifest": "data/manifest.jsonl", "out": "outputs/avrt", "config": "configs/teachers/paper.yaml"}'

For a work pool instead of this long-lived process, see ``prefect.yaml``: ``prefect deploy --all``
registers ``build-avrt/build-avrt-pool``, a deployment of its own (the same name would replace this one).
"""

from __future__ import annotations

import argparse

from flows.build_avrt import build_avrt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="build-avrt", help="deployment name (default build-avrt)")
    parser.add_argument("--limit", type=int, default=None, help="max concurrent flow runs of this deployment")
    args = parser.parse_args(argv)
    build_avrt.serve(name=args.name, limit=args.limit, tags=["avrt"],
                     description="AVRT data pipeline: teachers -> filter -> merger -> corpus")


if __name__ == "__main__":
    main()
