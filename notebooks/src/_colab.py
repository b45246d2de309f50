# Google Colab set-up; does nothing anywhere else. On Colab it clones the repository, keeps the
# outputs on Google Drive (asks for consent; HSAE_NO_DRIVE=1: not), installs the pinned packages
# once per runtime and picks the GPU profile: `colab` (the embedded SmolLM2), or `colab-gemma`
# (Gemma-2-2B) when your Hugging Face token can read it. Set HSAE_PROFILE first to choose another;
# set HSAE_RUN_ALL=1 first to run every notebook, in order, in this runtime.
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    REPO_URL = "https://github.com/hsae-reproduction/hierarchical-sae"
    BRANCH, REPO_DIR = "main", "/content/hierarchical-sae"
    if not os.path.isdir(REPO_DIR):
        subprocess.run(
            ["git", "clone", "--depth", "1", "--branch", BRANCH, REPO_URL, REPO_DIR], check=True
        )
    sys.path.insert(0, REPO_DIR)
    from hsae_utils.pipeline.colab import set_up

    set_up(REPO_DIR)
