from config.cli import main
from monitoring.cli import app

main(app)
