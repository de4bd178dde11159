from config.cli import main
from serving.cli import app

main(app)
