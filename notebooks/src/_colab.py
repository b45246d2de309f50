# Google Colab set-up; does nothing anywhere else. On Colab it clones the repository, installs
# its pinned packages and picks the GPU profile: `colab` (the embedded SmolLM2), or `colab-gemma`
# (Gemma-2-2B) when a Hugging Face token is set. Set HSAE_PROFILE first to choose another.
import os
import sys

if "google.colab" in sys.modules:
    import subprocess

    REPO_URL = "https://github.com/hsae-reproduction/hierarchical-sae"
    BRANCH, REPO_DIR = "main", "/content/hierarchical-sae"
    if not os.path.isdir(REPO_DIR):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, REPO_URL, REPO_DIR],
                       check=True)
    sys.path.insert(0, REPO_DIR)
    from hsae_utils.colab import set_up

    set_up(REPO_DIR)
