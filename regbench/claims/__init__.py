"""The claims: schema (claims.yaml), measures, stats, judge (one claim), family (Holm over every decision),
verdict (the typed Verdict and its labels), evaluate (the whole registry), publish (DVC metrics and the
MLflow claims run), decide (adaptive repeats) and drift (against a reference run)."""
