from features.cli import app

app()
