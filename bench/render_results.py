"""Markdown tables from bench_engine.py's JSON, so RESULTS.md quotes the measured numbers verbatim.

    python bench/render_results.py bench/results.json > /tmp/tables.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def summary(report: dict[str, Any]) -> list[str]:
    """One line per (model, workload): harness fast against lm-eval's best fixed batch size and auto."""
    lines = ["| model | workload | requests | harness fast s | lm-eval best fixed s (bs) | speed-up vs fixed | "
             "speed-up vs auto | positions: harness / lm-eval | max abs loglik diff | generations differing |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in report["models"]:
        for entry in model["workloads"]:
            rows = {row["engine"]: row for row in entry["engines"]}
            fast = rows["harness fast"]
            fixed = rows[f"lm-eval bs={entry['lm_eval_best_fixed_batch']}"]
            agreement = entry["agreement_vs_lm_eval_fixed"]["harness fast"]
            auto = f"{fast['speedup_vs_lm_eval_auto']:.2f}x" if fast["speedup_vs_lm_eval_auto"] else "not run"
            differing = agreement["generation_mismatches"] if entry["workload"].startswith("generate") else "-"
            lines.append(
                f"| {model['model']} | {entry['workload']} | {entry['requests']} | {fast['median_s']:.3f} | "
                f"{fixed['median_s']:.3f} ({entry['lm_eval_best_fixed_batch']}) | "
                f"**{fast['speedup_vs_lm_eval_fixed']:.2f}x** | {auto} | "
                f"{fast['computed_positions']} / {fixed['computed_positions']} | "
                f"{agreement['max_abs_loglik_diff']:.1e} | {differing} |")
    return lines


def details(report: dict[str, Any]) -> list[str]:
    lines = []
    for model in report["models"]:
        lines += ["", f"### {model['model']}: {model['parameters'] / 1e6:.1f}M parameters, vocabulary "
                  f"{model['vocabulary']}, {model['rows_per_template']} rows per template (choice), "
                  f"{model['generate_rows_per_template']} (generation)"]
        for entry in model["workloads"]:
            lines += ["", f"**{entry['workload']}**: {entry['requests']} requests, {entry['nominal_tokens']} "
                      f"workload tokens. {entry['description']}. lm-eval fixed batch sizes tried (seconds, "
                      f"one pass over every 3rd request): {entry['lm_eval_batch_trials_s']}.", "",
                      "| engine | median s | runs s | positions computed | forward calls | tokens/s | "
                      "lm-eval fixed / this | lm-eval auto / this |",
                      "|---|---:|---|---:|---:|---:|---:|---:|"]
            for row in entry["engines"]:
                runs = ", ".join(f"{t:.3f}" for t in row["runs_s"])
                auto = f"{row['speedup_vs_lm_eval_auto']:.2f}x" if row["speedup_vs_lm_eval_auto"] else "not run"
                lines.append(f"| {row['engine']} | {row['median_s']:.3f} | {runs} | {row['computed_positions']} | "
                             f"{row['forward_calls']} | {row['tokens_per_s']:.0f} | "
                             f"{row['speedup_vs_lm_eval_fixed']:.2f}x | {auto} |")
            if not any(row["engine"] == "lm-eval auto" for row in entry["engines"]):
                lines += ["", f"lm-eval `auto` not run: its batch-size probe alone feeds "
                          f"{entry['lm_eval_auto_probe_positions']} positions."]
            lines += ["", "Agreement with lm-eval (best fixed batch size): " + "; ".join(
                f"{name}: max abs loglik diff {a['max_abs_loglik_diff']:.1e}, argmax disagreements "
                f"{a['argmax_disagreements']}, is_greedy disagreements {a['is_greedy_disagreements']}, "
                f"generations differing {a['generation_mismatches']}"
                for name, a in entry["agreement_vs_lm_eval_fixed"].items())]
        startup = model["startup"]
        lines += ["", f"Start-up to the first model call ({startup['what']}): " + "; ".join(
            f"{label} median {median:.3f} s (runs {', '.join(f'{t:.3f}' for t in startup['runs_s'][label])})"
            for label, median in startup["median_s"].items())]
    return lines


def main() -> None:
    report = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json").read_text())
    print(f"Command: `{report['command']}`; total {report['total_s']:.0f} s; machine {report['machine']}")
    print()
    print("\n".join(summary(report)))
    print("\n".join(details(report)))


if __name__ == "__main__":
    main()
