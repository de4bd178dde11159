from validation.cli import app

app()
