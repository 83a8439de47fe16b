"""DVC stage claims: judge every claim in claims.yaml from the train results; write reports/claims.json."""

from __future__ import annotations

from pathlib import Path

from regbench import config
from regbench.claims import drift, evaluate, publish, schema, scopes
from regbench.cli import no_arguments, run_stage
from regbench.io import write_json

REGISTRY = Path("claims.yaml")
RESULTS = Path("results/train")
METRICS = Path("reports/claims.json")
DETAIL = Path("reports/claims_detail.json")


def main(argv: list[str]) -> None:
    no_arguments(argv, "claims")
    params = config.load()
    registry = schema.load_registry(REGISTRY)
    evaluation = evaluate.evaluate(registry, params, RESULTS)
    reference, source = drift.load_reference(params.claims.drift_reference, Path.cwd())
    evaluation["drift"] = drift.compare(evaluation["claims"], reference and reference.get("claims"), source)
    other, source = drift.load_reference(params.claims.scope_reference, Path.cwd(), "claims.scope_reference")
    evaluation["scopes"] = scopes.compare(evaluation["claims"], other and other.get("claims"), source)
    write_json(DETAIL, evaluation)
    write_json(METRICS, evaluate.metrics_view(evaluation))
    published = publish.publish(evaluation, [METRICS, DETAIL])
    print(f"claims: {evaluate.counts_line(evaluation['summary'])}; {published}")
    print(f"claims: drift against the reference: {evaluation['drift']['summary']}")
    if params.claims.scope_reference is not None:
        print(f"claims: {evaluation['scopes']['summary']}")


if __name__ == "__main__":
    run_stage(main)
