"""embwarden in the Airflow UI: the plugin's FastAPI app (pages and JSON API), see monitors.web.app."""
