from config.cli import main
from features.cli import app

main(app)
