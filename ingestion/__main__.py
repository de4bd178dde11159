from config.cli import main
from ingestion.cli import app

main(app)
