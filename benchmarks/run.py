"""`make bench`: measure the figures the issues ask for and write .bench/results.json.

A flat JSON object, figure name -> number. Run on an otherwise idle machine; each figure is
taken once (the demo) or as the best of a few repeats (the micro figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".bench" / "results.json"


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def encoder_and_probe_figures() -> dict[str, float]:
    from audits.corpus import generate_messages
    from audits.encoders import LocalEncoder, bundled_model_dir
    from audits.probes.base import Auxiliary
    from audits.probes.bow_inversion import BowInversion

    encoder = LocalEncoder(bundled_model_dir())
    texts = [m.text for m in generate_messages(1000, seed=99)]
    encoder.encode(texts[:64])  # load and warm up
    encode_seconds = best_of(2, lambda: encoder.encode(texts))
    aux = [m.text for m in generate_messages(3000, seed=1)]
    vectors = encoder.encode(aux)
    fit_seconds = best_of(1, lambda: BowInversion(seed=0).fit(Auxiliary(tuple(aux), vectors)))
    return {"encode_texts_per_second": round(len(texts) / encode_seconds, 1),
            "bow_inversion_fit_3000_seconds": round(fit_seconds, 2)}


def demo_figures() -> dict[str, float]:
    """The demo as a newcomer runs it first: no cached embeddings of the auxiliary corpus."""
    import shutil

    shutil.rmtree(ROOT / ".embwarden" / "cache", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monitors.cli.demo"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{ROOT / '.embwarden/demo/ledger.db'}")
    with engine.connect() as conn:
        f1 = dict(conn.execute(sa.text(
            "SELECT v.name, s.value FROM scores s JOIN audit_runs r ON r.id = s.audit_run_id "
            "JOIN versions v ON v.id = r.version_id WHERE s.metric = 'token_f1'")).all())
    engine.dispose()
    return {"demo_seconds": round(seconds, 1), "demo_v1_token_f1": round(f1["v1"], 3),
            "demo_v2_token_f1": round(f1["v2"], 3)}


def scheduled_figures() -> dict[str, float]:
    """The scheduled end-to-end test on a real Airflow stack writes its timings to
    .bench/scheduled.json; run it and lift the overhead against `airflow dags test`."""
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "tests/integration/test_scheduled.py"], cwd=ROOT, check=True)
    runs = json.loads((OUT.parent / "scheduled.json").read_text())["runs"]
    stack = runs["asset_triggered_v1_cached"]["queued_to_end_s"]
    dags_test = runs["dags_test_v1_cached"]
    return {"scheduled_run_cached_seconds": stack, "dags_test_run_cached_seconds": dags_test["start_to_end_s"],
            "dags_test_command_cached_seconds": dags_test["command_wall_s"],
            "scheduled_overhead_seconds": round(stack - dags_test["command_wall_s"], 1)}


SECTIONS = ("demo", "encoder", "strength", "speed", "first_audit", "real_text", "generative", "drift", "validation",
            "ui", "sample", "dp", "service", "scheduled", "celery", "toolbox")


def main() -> int:
    """`python benchmarks/run.py [SECTION ...]`: all sections by default; figures of sections not
    run this time are kept from the previous results file."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from benchmarks import celery, dp, probes, real_text, sampling, service, toolbox, ui

    wanted = sys.argv[1:] or list(SECTIONS)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        print(f"unknown section(s) {unknown}; expected some of {list(SECTIONS)}", file=sys.stderr)
        return 2
    np.random.seed(0)
    OUT.parent.mkdir(exist_ok=True)
    cache = OUT.parent / "cache"
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    runners = {
        "demo": demo_figures,
        "encoder": lambda: {**encoder_and_probe_figures(), **probes.encoder_figures()},
        "strength": lambda: probes.strength(cache, OUT.parent),
        "speed": lambda: probes.audit_10k_cached(cache),
        "first_audit": probes.first_audit,
        "real_text": lambda: {**real_text.figures(cache, generative=True), **probes.production_attacker()},
        "generative": lambda: probes.generative(cache, OUT.parent),
        "drift": lambda: probes.drift(cache),
        "validation": probes.validation,
        "ui": ui.ui_figures,
        "sample": sampling.sampling_figures,
        "dp": dp.dp_figures,
        "service": service.service_figures,
        "scheduled": scheduled_figures,
        "celery": celery.celery_figures,
        "toolbox": lambda: toolbox.figures(cache, OUT.parent),
    }
    for section in wanted:
        started = time.perf_counter()
        results.update(runners[section]())
        results[f"bench_{section}_seconds"] = round(time.perf_counter() - started, 1)
        OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")  # keep what is done
        print(f"bench: {section} done in {results[f'bench_{section}_seconds']} s", flush=True)
    print(json.dumps(results, indent=2, sort_keys=True))
    print(f"written to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
