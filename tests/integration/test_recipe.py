"""The README's "Your own deployment" recipe, run as written: its bash block is read from README.md,
only the placeholders a reader replaces (the database URLs, the model directory) are replaced, and
the two lines a person does by hand (`pip install .`, `$EDITOR`) are skipped. So the README cannot
drift from the product again: a missing `airflow db migrate` failed this test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from audits.encoders import bundled_model_dir
from tests.conftest import REPO
from tests.helpers import messages, pgvector_table, rows_for

pytestmark = pytest.mark.integration
HEADING = "## Your own deployment"


def recipe() -> list[str]:
    """The command lines of the recipe's first bash block."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(HEADING):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_recipe_runs_as_written(pg_url, tmp_path, encoder):
    url = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    texts = messages(900, seed=31)                    # unprotected MiniLM vectors, as the recipe's reader has
    pgvector_table(pg_url, rows_for("v1", texts, encoder.encode(texts).astype(np.float32), 1, as_bytes=False),
                   384, table="message_embeddings")
    lines = []
    for line in recipe():
        if line.startswith(("pip install", "$EDITOR")):
            continue                                  # done by a person
        line = line.replace("'postgresql://reader:...@db:5432/app'", f"'{url}'")
        line = line.replace("'postgresql://embwarden:...@db:5432/embwarden'", f"'{url}'")
        lines.append(line.replace("/models/minilm", str(bundled_model_dir())))
    assert any(line.startswith("airflow db migrate") for line in lines)
    for folder in ("dags", "plugins"):                # $PWD is a checkout
        (tmp_path / folder).symlink_to(REPO / folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EMBWARDEN"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", AIRFLOW_HOME=str(tmp_path / "airflow-home"),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", HF_HUB_OFFLINE="1")
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    status = done.stdout[done.stdout.rindex("support-search: gate"):]
    assert re.search(r"last audit: run 1 \(privacy_audit\), .* version v1: (warn|gate|rollback)", status), status
    assert "candidate_inversion.top1 1.000 (warn=0.2 gate=0.5)" in status, status   # gated by default
    assert re.search(r"report: \S+report.html \(embwarden report 1\)", status), status
