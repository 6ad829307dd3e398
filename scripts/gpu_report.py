"""The one table of `make test-gpu` (scripts/test-gpu.sh): the CUDA tests, the main job on CUDA, the
NIW precision table and the bench's GPU rows, read from the files the check wrote.

    python scripts/gpu_report.py outputs/gpu-check
"""

from __future__ import annotations

import csv
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def tests(out: Path) -> list[str]:
    xml = out / "cuda_tests.xml"
    if not xml.exists():
        return ["| tests/train/test_cuda.py | did not run (see cuda_tests.txt) |"]
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    rows = [f"| tests/train/test_cuda.py | {total - failures - errors - skipped} passed, {failures + errors} failed, {skipped} skipped |"]
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            rows.append(f"| failed: {case.get('name')} | {(bad.get('message') or '').splitlines()[0][:160]} |")
    return rows


def main_job(out: Path) -> list[str]:
    runs = out / "main" / "runs.csv"
    if not runs.exists():
        return ["| main job (device=cuda) | no summary (see main_job.txt) |"]
    row = next(csv.DictReader(open(runs)))
    seconds = sum(float(r["seconds"]) for r in csv.DictReader(open(out / "main" / "metrics.csv")))
    return [
        f"| main job (device=cuda) | {row['status']} at epoch {row['epoch']}: phase {row['phase']}, tau_niw {float(row['tau_niw']):.3g} "
        f"epochs, test acc {float(row['final_test_acc']):.4f}, {seconds:.1f} s of training |"
    ]


def lines(path: Path, keep) -> list[str]:
    return [line.rstrip() for line in path.read_text().splitlines() if keep(line)] if path.exists() else [f"({path.name} missing)"]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/gpu-check")
    device = (out / "device.txt").read_text().strip() if (out / "device.txt").exists() else "?"
    print(f"# make test-gpu: {device}\n")
    print("| check | result |\n|---|---|")
    for row in tests(out) + main_job(out):
        print(row)
    for step in lines(out / "steps.txt", bool):
        print(f"| step {step.split()[0]} | {' '.join(step.split()[1:])} |")
    print("\nNIW precision (bench/niw_precision.py: max relative error against float64 on the CPU)\n```")
    print("\n".join(lines(out / "precision.txt", lambda s: not s.startswith(("Traceback", " ")))))
    print("```\n\nbench/speed.py, per model-epoch\n```")
    for name in ("bench_mlp", "bench_cnn"):
        print("\n".join(lines(out / f"{name}.txt", lambda s: s.startswith(("fig", "cnn", "torch", "setting")))))
    print("```")


if __name__ == "__main__":
    main()
