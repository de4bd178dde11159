from ingestion.cli import app

app()
