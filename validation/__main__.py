from config.cli import main
from validation.cli import app

main(app)
