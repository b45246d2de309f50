"""Running the notebooks: the papermill loop (`cli.py`, behind run_all.sh), cluster launcher,
resource plan, locks, parameter checks, set-up (`prepare.py`) and the Colab runtime."""
