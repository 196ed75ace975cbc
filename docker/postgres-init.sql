-- A database of its own for the embwarden ledger, beside Airflow's metadata database.
CREATE DATABASE embwarden OWNER airflow;
