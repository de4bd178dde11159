from config.cli import main
from training.cli import app

main(app)
