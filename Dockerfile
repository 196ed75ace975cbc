# The Airflow image with embwarden installed; used by docker-compose.yml for every Airflow service.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root pyproject.toml README.md /opt/embwarden/
COPY --chown=airflow:root audits /opt/embwarden/audits
COPY --chown=airflow:root monitors /opt/embwarden/monitors
# torch from PyTorch's CPU index first: the default Linux wheel brings gigabytes of CUDA libraries.
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir "apache-airflow==3.3.2" "/opt/embwarden"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
