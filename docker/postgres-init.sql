-- Run once by the postgres image (pgvector/pgvector) when it initialises an empty data volume, as
-- POSTGRES_USER in POSTGRES_DB (`airflow`, Airflow's metadata database). It adds a database of its
-- own for the embwarden ledger, with the pgvector extension so that production tables with a
-- `vector` column can live beside the ledger and be audited through the `embwarden_db` connection.
-- A data volume made before this script existed is not initialised again: `docker compose down -v`.
CREATE DATABASE embwarden OWNER airflow;
\connect embwarden
CREATE EXTENSION IF NOT EXISTS vector;
